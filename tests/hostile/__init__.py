"""A generated hostile corpus (images and archives that break naive pipelines) and a local HTTP
server with scripted failures, for the download and preprocess tests."""
