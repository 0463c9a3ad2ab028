// goasync: N concurrent HTTP GETs of http://HOST/PATH from one static Go program (each its own
// dial: Go's dialer makes non-blocking connects and waits in epoll), directly (mode "direct") or
// speaking SOCKS5 itself (mode "socks", to SOCKSADDR, CONNECT by name). Prints each body, then
// "done N".
//
//	goasync MODE SOCKSADDR N HOST PATH
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
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
		return fmt.Errorf("greeting: %v %v", err, r[:2])
	}
	req := append([]byte{5, 1, 0, 3, byte(len(host))}, host...)
	req = append(req, byte(port>>8), byte(port))
	if _, err := c.Write(req); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, r[:4]); err != nil || r[1] != 0 {
		return fmt.Errorf("CONNECT: %v reply %d", err, r[1])
	}
	n := map[byte]int{1: 4, 4: 16}[r[3]]
	if r[3] == 3 {
		if _, err := io.ReadFull(c, r[:1]); err != nil {
			return err
		}
		n = int(r[0])
	}
	_, err := io.ReadFull(c, r[:n+2])
	return err
}

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: goasync MODE SOCKSADDR N HOST PATH")
		os.Exit(2)
	}
	mode, saddr, host, path := os.Args[1], os.Args[2], os.Args[4], os.Args[5]
	n, _ := strconv.Atoi(os.Args[3])
	bodies := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bodies[i], errs[i] = get(mode, saddr, host, path)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			fmt.Fprintf(os.Stderr, "goasync: GET %d: %v\n", i, errs[i])
			os.Exit(1)
		}
		fmt.Print(bodies[i])
	}
	fmt.Printf("done %d\n", n)
}

func get(mode, saddr, host, path string) (string, error) {
	var c net.Conn
	var err error
	if mode == "socks" {
		if c, err = net.DialTimeout("tcp", saddr, 60*time.Second); err == nil {
			err = socks(c, host, 80)
		}
	} else {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(host, "80"), 60*time.Second)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
