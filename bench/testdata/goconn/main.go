// goconn: the static Go client of the concurrent-connect benchmark: G goroutines making N
// sequential TCP connects each (connect, one byte written, close) to HOST:PORT, directly (mode
// "direct") or speaking SOCKS5 itself to 127.0.0.1:9050 (mode "socks"). Prints "conn_per_s=X".
// Built static (CGO_ENABLED=0) by the benchmark.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

func socks(c net.Conn, host string, port int) error {
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return err
	}
	r := make([]byte, 262)
	if _, err := io.ReadFull(c, r[:2]); err != nil || r[1] != 0 {
		return fmt.Errorf("greeting: %v", err)
	}
	req := append([]byte{5, 1, 0, 3, byte(len(host))}, host...)
	req = append(req, byte(port>>8), byte(port))
	if _, err := c.Write(req); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, r[:4]); err != nil || r[1] != 0 {
		return fmt.Errorf("reply: %v", err)
	}
	alen := map[byte]int{1: 4, 4: 16}[r[3]]
	if r[3] == 3 {
		if _, err := io.ReadFull(c, r[:1]); err != nil {
			return err
		}
		alen = int(r[0])
	}
	_, err := io.ReadFull(c, r[:alen+2])
	return err
}

func main() {
	mode := os.Args[1]
	g, _ := strconv.Atoi(os.Args[2])
	n, _ := strconv.Atoi(os.Args[3])
	host, port := os.Args[4], os.Args[5]
	p, _ := strconv.Atoi(port)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < g; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < n; j++ {
				addr := net.JoinHostPort(host, port)
				if mode == "socks" {
					addr = "127.0.0.1:9050"
				}
				c, err := net.Dial("tcp", addr)
				if err == nil && mode == "socks" {
					err = socks(c, host, p)
				}
				if err == nil {
					_, err = c.Write([]byte("x"))
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "goconn:", err)
					os.Exit(1)
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("conn_per_s=%.0f\n", float64(g*n)/time.Since(start).Seconds())
}
