"""The ledger of the paper's claims (notebook 08, ``sela-edu ledger``): the claims and their verdict rules
(:mod:`.claims`), the runs as data and their resumable store (:mod:`.runs`), what each kind of run does
(:mod:`.execute`), and notebook 08's figures (:mod:`.plots`)."""
