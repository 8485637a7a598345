"""``webrtc-broker bench``: load scenarios against a real local cluster.

The dense scenario (the default): N bot clients share one topic and all
publish to it at a fixed rate; every bot is subscribed, so each message fans
out to N-1 receivers. The world scenario (``--scenario world``): avatars
walking on a grid of cell topics. The bench starts a coordinator and comm
servers as processes (or uses an existing cluster), runs the bots in
separate worker processes, measures a raw aiortc pair and a Chromium pair as
yardsticks, and reports throughput, loss, latency, connect time, CPU and
memory. Subcommands measure other things: ``crowd`` (1,000 clients on one
server), ``attack``, ``coordinator-restart`` and ``soak``.

Modules: :mod:`.cli` and :mod:`.command` (the command), :mod:`.options`
(what to run), :mod:`.localcluster` (the processes under test), :mod:`.bots`
and :mod:`.workers` (the load generator, each side of its pipe),
:mod:`.payload` (timestamped bodies), :mod:`.baseline` and
:mod:`.nativepair` (the yardsticks), :mod:`.sampling` (/proc),
:mod:`.latency` (histograms and percentiles), :mod:`.runner` (one run),
:mod:`.results`, :mod:`.report` and :mod:`.plot` (the output);
:mod:`.worldgrid`, :mod:`.worldbots`, :mod:`.world` and :mod:`.worldreport`
(the world scenario); :mod:`.crowd`, :mod:`.crowdclients`, :mod:`.crowdrun`
and :mod:`.crowdreport` (``crowd``); :mod:`.batchsweep` and :mod:`.udpmodes`
(alternating comparisons).
"""
