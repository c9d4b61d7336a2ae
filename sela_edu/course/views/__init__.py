"""What a reader sees: the shared plots (:mod:`.figures`), the cluster browser (:mod:`.browser`) and the
numbers it shows (:mod:`.cluster_views`), and result sentences from the numbers (:mod:`.verdicts`)."""
