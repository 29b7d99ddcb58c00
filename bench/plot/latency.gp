# SPDX-License-Identifier: MIT
#
# bench/plot/latency.gp - latency percentiles of one scenario (bench/report.py
# runs it). Variables given with -e: datafile (rows: "label" median min max
# p50 p99 p999, latencies in microseconds), outfile (PNG), ttl (title).
# Three bars per system (and case): the medians of p50, p99 and p999 over
# the rounds, on a log scale.
set terminal pngcairo size 900,500 noenhanced font ",10"
set output outfile
set title ttl
set ylabel "latency (us, log scale)"
set logscale y
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.7 border -1
set grid ytics
set xtics rotate by -20
set key top left
plot datafile using 5:xtic(1) title "p50" lc rgb "#6baed6", \
     '' using 6 title "p99" lc rgb "#3182bd", \
     '' using 7 title "p999" lc rgb "#08519c"
