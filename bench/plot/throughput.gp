# SPDX-License-Identifier: MIT
#
# bench/plot/throughput.gp - throughput bars of one scenario (bench/report.py
# runs it). Variables given with -e: datafile (rows: "label" median min max
# p50 p99 p999), outfile (PNG), ttl (title), unit (y axis label).
# One bar per system (and case) at its median over the rounds, with an error
# bar from the slowest to the fastest round.
set terminal pngcairo size 900,500 noenhanced font ",10"
set output outfile
set title ttl
set ylabel unit
set yrange [0:*]
set style fill solid 0.6 border -1
set boxwidth 0.6
set grid ytics
set xtics rotate by -20
set key off
plot datafile using 0:2:xtic(1) with boxes lc rgb "#3b75af", \
     '' using 0:2:3:4 with yerrorbars lc rgb "black" pt -1, \
     '' using 0:2:(sprintf("%.0f", $2)) with labels offset 0,1
