"""The teaching layer: what `bdh demo`, `bdh analyze` and `bdh view` show a student.

It reads the bridge (`equivalence`: compile, compare, run) and the two models; none of them reads it.

    demo.py      the demo models (trained once, cached), the recall prompt, the graph walk of a prompt
    lesson.py    one part of `bdh demo`, step by step: model, graph, walk, check, memory, figures, report
    memory.py    which synapses hold each fact of a recall prompt, and the ablation that proves it
    analyze.py   the paper's Sec. 5-6 measurements on any model (`bdh analyze`)
    figures.py   the PNG figures and their captions
    html.py      the self-contained HTML report page
    view.py      the neuron viewer's data: a prompt stepped sub-round by sub-round (`bdh view`)
    serve.py     the viewer on a local HTTP server that steps the live simulator (`bdh view --serve`)
    words.py     the notation every report and the viewer explain
    progress.py  progress bars on stderr
"""
