// Package portgate admits connections to a loopback listener of the supervisor only from the local
// ports the supervisor announced just before connecting a program's socket to it, so that other
// local users cannot use what the listener offers (Tor through a unix SocksPort, DNS through Tor).
package portgate

import (
	"sync"
	"time"
)

// Gate is a set of announced ports. Announcements expire after a minute (a connect that never
// came). The zero value is ready to use.
type Gate struct {
	mu    sync.Mutex           // guards ports
	ports map[uint16]time.Time // announced local port -> when
}

// Expect announces a connection from local port p.
func (g *Gate) Expect(p uint16) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ports == nil {
		g.ports = map[uint16]time.Time{}
	}
	g.ports[p] = time.Now()
}

// Admit reports whether p was announced, and forgets it.
func (g *Gate) Admit(p uint16) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.ports[p]
	delete(g.ports, p)
	for q, t := range g.ports {
		if time.Since(t) > time.Minute {
			delete(g.ports, q)
		}
	}
	return ok
}
