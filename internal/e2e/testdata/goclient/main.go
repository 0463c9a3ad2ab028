// Command goclient is a static (CGO_ENABLED=0) Go HTTP client used by the integration and end-to-end tests.
//
//	goclient URL...   fetch each URL, print the body and "remote=ADDR" as the connection saw it
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	for _, url := range os.Args[1:] {
		var remote string
		tr := &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					remote = c.RemoteAddr().String()
				}
				return c, err
			},
			DisableKeepAlives: true,
		}
		cl := &http.Client{Transport: tr, Timeout: 20 * time.Second}
		resp, err := cl.Get(url)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goclient:", err)
			os.Exit(2)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%sremote=%s\n", body, remote)
	}
}
