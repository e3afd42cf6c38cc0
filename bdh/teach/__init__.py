"""The teaching layer: what `bdh demo`, `bdh analyze` (and the neuron viewer) show a student.

It reads the bridge (`equivalence`: compile, compare, run) and the two models; none of them reads it.

    demo.py      train (or reuse) the demo model, step a prompt through its neuron graph (graph_walk)
    figures.py   the demo's PNG figures
    html.py      the self-contained HTML report page
    analyze.py   the paper's Sec. 5-6 measurements on any model (`bdh analyze`)
"""
