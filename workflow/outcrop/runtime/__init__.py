"""Runtime: threads, the allocator, progress lines and file locks; imports nothing else of the package."""
