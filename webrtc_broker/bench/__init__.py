"""``webrtc-broker bench``: the seed's dense scenario against a real local cluster.

N bot clients share one topic and all publish to it at a fixed rate; every
bot is subscribed, so each message fans out to N-1 receivers. The bench
starts a coordinator and comm servers as processes (or uses an existing
cluster), runs the bots in separate worker processes, measures a raw aiortc
pair as the ceiling to compare with, and reports throughput, loss, latency,
connect time, CPU and memory.

Modules: :mod:`.cli` and :mod:`.command` (the command), :mod:`.options`
(what to run), :mod:`.localcluster` (the processes under test), :mod:`.bots`
and :mod:`.workers` (the load generator, each side of its pipe),
:mod:`.payload` (timestamped bodies), :mod:`.baseline` (the ceiling),
:mod:`.sampling` (/proc), :mod:`.latency` (histograms and percentiles),
:mod:`.runner` (one run), :mod:`.results`, :mod:`.report` and :mod:`.plot`
(the output).
"""
