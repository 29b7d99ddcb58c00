// SPDX-License-Identifier: MIT

// Command go-spawn is the Go peer of bench/exec_bench.c and
// bench/task_bench.c: the same scheduling workloads, done the way a Go
// program would do them, each run timed inside the process and reported as
// one JSON line on stdout.
//
// Modes:
//
//	-mode spawn -n N [-batch B]
//	    One goroutine (main) starts N goroutines, each of which only calls
//	    wg.Done() on a shared WaitGroup. Timed from just before the first
//	    `go` statement to the return of wg.Wait(). exec_bench's peer for
//	    ql_spawn called from inside a task. With -batch B (task_bench's
//	    peer for ql_go + ql_join) it starts B goroutines, waits for them,
//	    and repeats until N have run, as task_bench joins its tasks batch
//	    by batch.
//	-mode outside -threads T -n N
//	    T goroutines, each locked to its own OS thread (runtime.LockOSThread),
//	    start N/T goroutines each (the first one also takes the remainder),
//	    all doing wg.Done(). Timed from the release of the T spawners (they
//	    are all waiting on a channel by then) to the return of wg.Wait().
//	    The peer for ql_spawn called by plain threads.
//	-mode pingpong -n N
//	    Two goroutines bounce a token over two unbuffered channels N times
//	    (2N hand-offs). Reports ns per switch, that is per hand-off.
//	-mode yield -n N
//	    Two goroutines each call runtime.Gosched() N times (2N switches
//	    with -procs 1), released together. Reports ns per switch: the
//	    closest Go has to ql_yield between two tasks on one worker.
//	-mode park -n N
//	    Memory of parked goroutines: reads VmRSS and VmPTE from
//	    /proc/self/status (after a GC), starts N goroutines that each block
//	    on a receive from one channel, waits until all have started, reads
//	    them again, then closes the channel and waits for all to end.
//	    Reports "rss_bytes_per" and "pte_bytes_per" (the deltas over N) and
//	    the raw kB figures. No warm-up: a warm runtime reuses the stacks of
//	    goroutines that ended, which would hide the cost being measured.
//	-mode defer -n M -k K
//	    Defer cost. "loop": a function that defers a small non-inlined
//	    function K times in a loop (a heap-or-pool defer record each, since
//	    defers in loops cannot be open-coded), called M times, minus the
//	    same with K = 1, over M*(K-1): ns per deferred call pushed and run.
//	    "open": a function with one defer (open-coded by the compiler),
//	    called M*K times: ns per call, the call itself included. Reports
//	    "ns_per_defer" (loop) and "ns_per_defer_open".
//	-mode wake -n N
//	    Wake-up latency of a parked goroutine: a sender locked to its OS
//	    thread sleeps (-gap, 2 ms) so that the scheduler goes idle, takes
//	    t0 and sends it over a channel to a goroutine blocked on it, which
//	    measures time.Since(t0). Reports p50, p99, p999 and max in ns. The
//	    sender holds a P, so this is not exactly qilin's "outside thread";
//	    exec_bench shows it for information only.
//
// GOMAXPROCS comes from -procs (0, the default: every CPU). Each mode first
// runs -warmup untimed repetitions of itself (1 by default) so that the
// measured one finds goroutine stacks and run queues warm, as qilin's rounds
// find its pools warm.
//
// Output, one line:
//
//	{"mode":"spawn","n":2000000,"procs":2,"threads":0,"ns":123456789,"per_sec":16200000.0}
//
// pingpong and yield add "ns_per_switch"; park and defer add the fields
// named above; wake adds "p50_ns", "p99_ns", "p999_ns",
// "max_ns", "mean_ns"; its "ns" is the sum of the latencies and its
// "per_sec" is 0 (its warm-up repetitions take 50 samples each). Errors go to
// stderr with exit status 2 (usage) or 1.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// defaultWakeGap is the pause before each wake-up sample: long enough for the
// scheduler's spinning Ms to give up and park.
const defaultWakeGap = 2 * time.Millisecond

// wakeWarmupSamples is the size of each untimed wake repetition: enough to
// start the receiver and fault in its stack, far fewer than a measured run.
const wakeWarmupSamples = 50

// result is the JSON line printed on stdout. Fields a mode does not measure
// are left out.
type result struct {
	Mode        string  `json:"mode"`
	N           int     `json:"n"`
	Procs       int     `json:"procs"`
	Threads     int     `json:"threads"`
	Ns          int64   `json:"ns"`
	PerSec      float64 `json:"per_sec"`
	NsPerSwitch float64 `json:"ns_per_switch,omitempty"`
	P50Ns       int64   `json:"p50_ns,omitempty"`
	P99Ns       int64   `json:"p99_ns,omitempty"`
	P999Ns      int64   `json:"p999_ns,omitempty"`
	MaxNs       int64   `json:"max_ns,omitempty"`
	MeanNs      float64 `json:"mean_ns,omitempty"`
	Batch       int     `json:"batch,omitempty"`
	// park
	RssBeforeKB int64   `json:"rss_before_kb,omitempty"`
	RssAfterKB  int64   `json:"rss_after_kb,omitempty"`
	PteBeforeKB int64   `json:"pte_before_kb,omitempty"`
	PteAfterKB  int64   `json:"pte_after_kb,omitempty"`
	RssBytesPer float64 `json:"rss_bytes_per,omitempty"`
	PteBytesPer float64 `json:"pte_bytes_per,omitempty"`
	// defer
	K              int     `json:"k,omitempty"`
	NsPerDefer     float64 `json:"ns_per_defer,omitempty"`
	NsPerDeferOpen float64 `json:"ns_per_defer_open,omitempty"`
}

// spawn starts n goroutines from the calling goroutine and waits for all of
// them. The WaitGroup is set to n up front, as exec_bench sets its counter.
func spawn(n int) time.Duration {
	var wg sync.WaitGroup

	wg.Add(n)
	start := time.Now()
	for i := 0; i < n; i++ {
		go func() { wg.Done() }()
	}
	wg.Wait()
	return time.Since(start)
}

// spawnBatches starts n goroutines b at a time, waiting for each batch
// before starting the next.
func spawnBatches(n, b int) time.Duration {
	var wg sync.WaitGroup

	start := time.Now()
	for done := 0; done < n; {
		k := b
		if n-done < k {
			k = n - done
		}
		wg.Add(k)
		for i := 0; i < k; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
		done += k
	}
	return time.Since(start)
}

// outside starts n goroutines from t spawners, each on its own OS thread.
// The clock starts when the spawners, all parked on the start channel, are
// released.
func outside(t, n int) time.Duration {
	var wg, ready, spawners sync.WaitGroup
	startCh := make(chan struct{})

	wg.Add(n)
	ready.Add(t)
	spawners.Add(t)
	for k := 0; k < t; k++ {
		share := n / t
		if k == 0 {
			share += n % t
		}
		go func(share int) {
			defer spawners.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ready.Done()
			<-startCh
			for i := 0; i < share; i++ {
				go func() { wg.Done() }()
			}
		}(share)
	}
	ready.Wait()
	start := time.Now()
	close(startCh)
	wg.Wait()
	el := time.Since(start)
	// The spawners must be gone before the next repetition starts its own.
	spawners.Wait()
	return el
}

// pingpong bounces a token n times between two goroutines: 2n hand-offs.
func pingpong(n int) time.Duration {
	ping := make(chan int)
	pong := make(chan int)
	done := make(chan struct{})

	go func() {
		for v := range ping {
			pong <- v
		}
		close(done)
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	el := time.Since(start)
	close(ping)
	<-done
	return el
}

// yield runs two goroutines that each call runtime.Gosched() n times, both
// released at once by closing a channel they wait on.
func yield(n int) time.Duration {
	var ready, wg sync.WaitGroup
	startCh := make(chan struct{})

	ready.Add(2)
	wg.Add(2)
	for k := 0; k < 2; k++ {
		go func() {
			defer wg.Done()
			ready.Done()
			<-startCh
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
		}()
	}
	ready.Wait()
	start := time.Now()
	close(startCh)
	wg.Wait()
	return time.Since(start)
}

// memStatus reads VmRSS and VmPTE, in kB, from /proc/self/status.
func memStatus() (rss, pte int64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fail(1, "%v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "VmRSS:":
			rss = v
		case "VmPTE:":
			pte = v
		}
	}
	if rss == 0 {
		fail(1, "no VmRSS in /proc/self/status")
	}
	return rss, pte
}

// park parks n goroutines on a channel receive and fills in the memory
// figures of res; it returns the time taken to start and park them all.
func park(n int, res *result) time.Duration {
	var started, done sync.WaitGroup
	ch := make(chan struct{})

	runtime.GC()
	debug.FreeOSMemory()
	res.RssBeforeKB, res.PteBeforeKB = memStatus()
	started.Add(n)
	done.Add(n)
	start := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			started.Done()
			<-ch
			done.Done()
		}()
	}
	started.Wait()
	el := time.Since(start)
	res.RssAfterKB, res.PteAfterKB = memStatus()
	close(ch)
	done.Wait()
	res.RssBytesPer = float64(res.RssAfterKB-res.RssBeforeKB) * 1024 / float64(n)
	res.PteBytesPer = float64(res.PteAfterKB-res.PteBeforeKB) * 1024 / float64(n)
	return el
}

// deferSink is what the deferred calls update, so that they cannot be
// optimised away.
var deferSink uint64

//go:noinline
func bump(p *uint64) { *p++ }

//go:noinline
func deferLoop(k int, p *uint64) {
	for i := 0; i < k; i++ {
		defer bump(p)
	}
}

//go:noinline
func deferOne(p *uint64) {
	defer bump(p)
}

// deferTimes returns the time of m calls of deferLoop(k), of m calls of
// deferLoop(1), and of m*k calls of deferOne.
func deferTimes(m, k int) (loopK, loop1, open time.Duration) {
	start := time.Now()
	for i := 0; i < m; i++ {
		deferLoop(k, &deferSink)
	}
	loopK = time.Since(start)
	start = time.Now()
	for i := 0; i < m; i++ {
		deferLoop(1, &deferSink)
	}
	loop1 = time.Since(start)
	start = time.Now()
	for i := 0; i < m*k; i++ {
		deferOne(&deferSink)
	}
	open = time.Since(start)
	return loopK, loop1, open
}

// wake takes n wake-up latency samples, gap apart, and returns them sorted.
func wake(n int, gap time.Duration) []time.Duration {
	req := make(chan time.Time)
	ack := make(chan time.Duration)
	lat := make([]time.Duration, 0, n)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	go func() {
		for t0 := range req {
			ack <- time.Since(t0)
		}
	}()
	for i := 0; i < n; i++ {
		time.Sleep(gap)
		req <- time.Now()
		lat = append(lat, <-ack)
	}
	close(req)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat
}

// percentile of sorted samples, nearest rank (p in [0, 1]).
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func fail(code int, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go-spawn: "+format+"\n", args...)
	os.Exit(code)
}

func main() {
	mode := flag.String("mode", "spawn", "spawn, outside, pingpong, yield, park, defer or wake")
	n := flag.Int("n", 2000000, "goroutines to start (spawn, outside, park), round trips "+
		"(pingpong), Gosched calls per goroutine (yield), calls (defer) or samples (wake)")
	batch := flag.Int("batch", 0, "spawn: goroutines per batch, each waited for (0: all at once)")
	k := flag.Int("k", 32, "defer: deferred calls per function call")
	threads := flag.Int("threads", runtime.NumCPU(), "spawner OS threads (outside)")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: every CPU)")
	warmup := flag.Int("warmup", 1, "untimed repetitions before the measured one")
	gap := flag.Duration("gap", defaultWakeGap, "pause before each wake-up sample (wake)")
	flag.Parse()

	if flag.NArg() != 0 || *n < 1 || *threads < 1 || *procs < 0 || *warmup < 0 ||
		*batch < 0 || *k < 2 {
		flag.Usage()
		os.Exit(2)
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	res := result{Mode: *mode, N: *n, Procs: runtime.GOMAXPROCS(0)}

	var el time.Duration
	switch *mode {
	case "spawn":
		res.Batch = *batch
		for i := 0; i <= *warmup; i++ {
			if *batch > 0 {
				el = spawnBatches(*n, *batch)
			} else {
				el = spawn(*n)
			}
		}
	case "outside":
		if *threads > *n {
			fail(2, "-threads %d exceeds -n %d", *threads, *n)
		}
		res.Threads = *threads
		for i := 0; i <= *warmup; i++ {
			el = outside(*threads, *n)
		}
	case "pingpong":
		for i := 0; i <= *warmup; i++ {
			el = pingpong(*n)
		}
		res.NsPerSwitch = float64(el.Nanoseconds()) / float64(2*(*n))
	case "yield":
		for i := 0; i <= *warmup; i++ {
			el = yield(*n)
		}
		res.NsPerSwitch = float64(el.Nanoseconds()) / float64(2*(*n))
	case "park":
		el = park(*n, &res)
	case "defer":
		var loopK, loop1, open time.Duration
		for i := 0; i <= *warmup; i++ {
			loopK, loop1, open = deferTimes(*n, *k)
		}
		el = loopK
		res.K = *k
		res.NsPerDefer = float64((loopK - loop1).Nanoseconds()) / float64(*n*(*k-1))
		res.NsPerDeferOpen = float64(open.Nanoseconds()) / float64(*n*(*k))
	case "wake":
		var lat []time.Duration
		for i := 0; i < *warmup; i++ {
			wake(wakeWarmupSamples, *gap)
		}
		lat = wake(*n, *gap)
		for _, d := range lat {
			el += d
		}
		res.P50Ns = percentile(lat, 0.50).Nanoseconds()
		res.P99Ns = percentile(lat, 0.99).Nanoseconds()
		res.P999Ns = percentile(lat, 0.999).Nanoseconds()
		res.MaxNs = lat[len(lat)-1].Nanoseconds()
		res.MeanNs = float64(el.Nanoseconds()) / float64(len(lat))
	default:
		fail(2, "unknown -mode %q (spawn, outside, pingpong, yield, park, defer, wake)", *mode)
	}
	res.Ns = el.Nanoseconds()
	// A rate means nothing for wake, whose ns is a sum of latencies.
	if res.Ns > 0 && *mode != "wake" {
		res.PerSec = float64(*n) * float64(time.Second) / float64(res.Ns)
	}
	line, err := json.Marshal(res)
	if err != nil {
		fail(1, "%v", err)
	}
	fmt.Println(string(line))
}
