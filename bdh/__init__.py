"""`bdh`: the command line over the three packages (`bdh_gpu`, `bdh_graph`, `equivalence`) and the teaching
layer (`bdh.teach`)."""

__version__ = "0.1.0"
