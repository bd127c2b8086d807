"""GPU access behind one narrow interface: NVML, a simulated NVML, or nothing."""
