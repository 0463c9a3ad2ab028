// golookup: N lookups of distinct names with Go's own resolver (net.Resolver, PreferGo), timed.
// Prints "ns_per_lookup=X ok=K". Built static (CGO_ENABLED=0) by the benchmark.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	tag := os.Args[2]
	r := &net.Resolver{PreferGo: true}
	ok := 0
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := r.LookupIP(context.Background(), "ip4", fmt.Sprintf("h%d-%s.bench.example", i, tag)); err == nil {
			ok++
		}
	}
	fmt.Printf("ns_per_lookup=%d\nok=%d\n", time.Since(start).Nanoseconds()/int64(n), ok)
}
