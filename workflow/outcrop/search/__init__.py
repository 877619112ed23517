"""Search: the FAISS index, clusters, analogues, ad-hoc queries and the evaluation against truth."""
