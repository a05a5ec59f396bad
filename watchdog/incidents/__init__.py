"""From signals to incidents: alert rules (SLO burn, failing probes) become incident transitions by
compare-and-set in the store, and the winner of a transition enqueues its pages in the outbox. Imports the
store, notify's outbox topic, config and core; SLO signals arrive through a protocol, not an import."""
