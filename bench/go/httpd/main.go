// SPDX-License-Identifier: MIT

// Command go-httpd is the Go peer of qilin-httpd (bench/httpd/) in the
// http scenario (bench/run.sh http): the same deferred-task service on
// net/http, written the way a Go service would be.
//
// Endpoints, as qilin-httpd has them:
//
//	POST /defer-task   reads the (small) body, takes the next record of the
//	                   task log (a bounded ring of records per log, the body
//	                   copied in), starts a goroutine for the task and
//	                   answers at once 202 {"id":N}. The goroutine hashes the
//	                   body (64-bit FNV-1a, as qilin-httpd) and marks the
//	                   record done. A record is reused only once its task is
//	                   done; otherwise 503 (the log is full of pending tasks).
//	GET /task/ID       200 {"id":N,"state":"done","hash":"%016x"} once the
//	                   task has run, 200 {"id":N,"state":"queued"} before,
//	                   404 for an id never given or whose record was reused.
//	GET /healthz       200 ok.
//
// qilin-httpd keeps one log of 32768 records per worker; this server keeps
// GOMAXPROCS logs of 32768 records, task id N in log N mod GOMAXPROCS, each
// behind its own mutex (what a Go programmer would write; with GOMAXPROCS=1
// there is no contention on it).
//
//	go-httpd -p PORT [-a ADDR]
//
// Prints "listening on ADDR:PORT" once the listener is up. SIGTERM or
// SIGINT shuts the server down (http.Server.Shutdown, 1 s grace), waits
// for the tasks started and exits 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const logSize = 32768 // records per log, as qilin-httpd has per worker

type record struct {
	id   uint64 // 0: empty
	done bool
	hash uint64
	body []byte
}

type tasklog struct {
	mu   sync.Mutex
	recs [logSize]record
}

type server struct {
	next  uint64 // last id given (atomic)
	logs  []*tasklog
	tasks sync.WaitGroup
}

// fnv1a64 is the 64-bit FNV-1a hash of b.
func fnv1a64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func (s *server) slot(id uint64) (*tasklog, *record) {
	n := uint64(len(s.logs))
	l := s.logs[id%n]
	return l, &l.recs[(id/n)%logSize]
}

func (s *server) task(id uint64) {
	defer s.tasks.Done()
	l, r := s.slot(id)
	l.mu.Lock()
	body := r.body
	l.mu.Unlock()
	h := fnv1a64(body)
	l.mu.Lock()
	if r.id == id {
		r.done = true
		r.hash = h
	}
	l.mu.Unlock()
}

func (s *server) deferTask(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64*1024+1))
	if err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	if len(body) > 64*1024 {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	id := atomic.AddUint64(&s.next, 1)
	l, rec := s.slot(id)
	l.mu.Lock()
	if rec.id != 0 && !rec.done {
		l.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"task log full"}`)
		return
	}
	*rec = record{id: id, body: body}
	l.mu.Unlock()
	s.tasks.Add(1)
	go s.task(id)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, "{\"id\":"+strconv.FormatUint(id, 10)+"}")
}

func (s *server) getTask(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(strings.TrimPrefix(r.URL.Path, "/task/"), 10, 64)
	if r.Method != http.MethodGet || err != nil || id == 0 {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	l, rec := s.slot(id)
	l.mu.Lock()
	got := *rec
	l.mu.Unlock()
	if got.id != id {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if got.done {
		fmt.Fprintf(w, "{\"id\":%d,\"state\":\"done\",\"hash\":\"%016x\"}", id, got.hash)
	} else {
		fmt.Fprintf(w, "{\"id\":%d,\"state\":\"queued\"}", id)
	}
}

func main() {
	port := flag.Int("p", 0, "TCP port to listen on")
	addr := flag.String("a", "127.0.0.1", "IPv4 address to listen on")
	flag.Parse()
	if *port <= 0 || *port > 65535 || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: go-httpd -p PORT [-a ADDR]")
		os.Exit(2)
	}
	s := &server{}
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		s.logs = append(s.logs, &tasklog{})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/defer-task", s.deferTask)
	mux.HandleFunc("/task/", s.getTask)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", *addr, *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-httpd:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: mux}
	fmt.Printf("listening on %s:%d\n", *addr, *port)
	done := make(chan struct{})
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		srv.Shutdown(ctx)
		cancel()
		close(done)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "go-httpd:", err)
		os.Exit(1)
	}
	<-done
	s.tasks.Wait()
}
