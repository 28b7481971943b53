"""The embedded local environment: a throwaway PostgreSQL and a real kube-apiserver + etcd."""
