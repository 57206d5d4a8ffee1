"""On-demand restore over HTTP (Ray Serve): the index of an ingest output (``index``), the routes' HTTP side
(``http``), and the deployment with its app builder (``app``). Imported by name: it loads Ray Serve."""
