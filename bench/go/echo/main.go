// SPDX-License-Identifier: MIT

// Command go-echo is the Go peer of bench/echo_server.c in the echo
// scenario (bench/run.sh echo): a TCP echo server written the way a Go
// program would be, one goroutine per connection reading into a buffer and
// writing every byte back. The runtime's netpoller (epoll) parks the
// goroutines; GOMAXPROCS (from the environment, as run.sh sets it) decides
// how many threads run them. TCP_NODELAY is Go's default.
//
//	go-echo -p PORT [-a ADDR]
//
// Prints "listening on ADDR:PORT" once the listener is up. SIGTERM or
// SIGINT closes the listener and every connection, then exits 0.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

func main() {
	port := flag.Int("p", 0, "TCP port to listen on")
	addr := flag.String("a", "127.0.0.1", "IPv4 address to listen on")
	flag.Parse()
	if *port <= 0 || *port > 65535 || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: go-echo -p PORT [-a ADDR]")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", *addr, *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-echo:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s:%d\n", *addr, *port)

	var mu sync.Mutex
	conns := make(map[net.Conn]struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()

	var wg sync.WaitGroup
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				continue // EMFILE and the like: try again
			}
			break // the listener was closed
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			buf := make([]byte, 16*1024)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}(c)
	}
	wg.Wait()
}
