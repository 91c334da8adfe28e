"""The search app (`omnisdk app`): a Gradio UI over a collection, with guarded file routes.

- `backend`: the small Protocol the app needs (search, index_files, indexed_roots, modalities).
- `store_backend`: that Protocol over `omnisdk.search` (Indexer, Searcher) and an omnisdk store.
- `server`: the FastAPI app, its file routes and safety rules; `serve`, `BackgroundServer`.
- `ui`, `cards`, `previews`, `guard`: the interface, result cards, preview pictures, the path guard.
"""
