"""Which pod holds which device: the kubelet pod-resources API (generated v1 stubs) and a cached client."""
