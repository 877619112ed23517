"""Runtime: threads, the allocator and progress lines; imports nothing else of the package."""
