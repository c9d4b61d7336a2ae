"""Running and publishing the course: profiles and folders (:mod:`.profiles`), measured numbers and the
summary table (:mod:`.results`), papermill runs of a notebook or the series (:mod:`.runner`), a run's HTML
pages (:mod:`.site`), and the CPU notebooks' one data decision (:mod:`.data_choice`)."""
