"""Event store backends, chosen by URL through :data:`medianest.events.base.STORES`."""
