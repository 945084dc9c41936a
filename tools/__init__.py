"""Developer and operator tools, outside the runtime package and the images: the dashboards'
generator (`dashboard`), a local Prometheus (`prometheus`), the Kubernetes and Compose export
(`export_flow`) and the container smoke run (`container-smoke`)."""
