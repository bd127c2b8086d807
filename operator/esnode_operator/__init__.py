"""esnode operator: EsnodeFleet -> agent DaemonSets, ServiceMonitor and fleet power status."""
