package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Asynchronous connects (issue 11) through the private Tor network: programs that open many
// connections at once from an event loop, each run under this torsocks, under the C torsocks and
// speaking SOCKS itself to Tor (no torsocks: "socks"). Under this torsocks each must complete with
// the right content; the times go to the log (medians of asyncRounds interleaved rounds, and the
// ratios to "socks"), for docs/benchmarks.md. No timing is asserted.

const asyncRounds = 3

// pyAsyncMany: N concurrent fetches of http://HOST/PATH with asyncio, directly or (mode socks)
// speaking SOCKS5 to SOCKSHOST:SOCKSPORT itself. Prints each body.
const pyAsyncMany = `import asyncio, sys
mode, shost, sport, n, host, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
async def one():
    if mode == "socks":
        r, w = await asyncio.open_connection(shost, sport)
        w.write(b"\x05\x01\x00")
        assert (await r.readexactly(2)) == b"\x05\x00"
        w.write(b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode() + (80).to_bytes(2, "big"))
        rep = await r.readexactly(4)
        assert rep[1] == 0, rep
        await r.readexactly({1: 4, 4: 16}[rep[3]] + 2)
    else:
        r, w = await asyncio.open_connection(host, 80)
    w.write(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    await w.drain()
    return (await r.read()).decode()
async def main():
    for b in await asyncio.gather(*[one() for _ in range(n)]):
        sys.stdout.write(b)
asyncio.run(asyncio.wait_for(main(), 60))`

// nodeAsyncMany: N concurrent http.get of http://HOST/PATH, or (mode socks) the same GETs over
// sockets that speak SOCKS5 to SOCKSHOST:SOCKSPORT first. Prints each body.
const nodeAsyncMany = `const http = require("http"), net = require("net");
const [mode, shost, sport, n, host, path] = process.argv.slice(1); // node -e: argv[1] is the first argument
function direct() {
  return new Promise((ok, fail) => {
    http.get({host, port: 80, path, agent: false}, res => {
      let b = ""; res.setEncoding("utf8"); res.on("data", d => b += d); res.on("end", () => ok(b));
    }).on("error", fail);
  });
}
function socks() {
  return new Promise((ok, fail) => {
    const s = net.connect(+sport, shost);
    let st = 0, buf = Buffer.alloc(0);
    s.on("error", fail);
    s.on("connect", () => s.write(Buffer.from([5, 1, 0])));
    s.on("data", d => {
      buf = Buffer.concat([buf, d]);
      if (st === 0 && buf.length >= 2) {
        buf = buf.subarray(2); st = 1;
        s.write(Buffer.concat([Buffer.from([5, 1, 0, 3, host.length]), Buffer.from(host), Buffer.from([0, 80])]));
      }
      if (st === 1 && buf.length >= 10) {
        if (buf[1] !== 0) return fail(new Error("SOCKS reply " + buf[1]));
        buf = buf.subarray(10); st = 2;
        s.write("GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\n\r\n");
      }
    });
    s.on("end", () => { const t = buf.toString(); ok(t.slice(t.indexOf("\r\n\r\n") + 4)); });
  });
}
Promise.all(Array.from({length: +n}, () => mode === "socks" ? socks() : direct()))
  .then(bs => { for (const b of bs) process.stdout.write(b); }, e => { console.error(e); process.exit(1); });`

// asyncProgram is one program of the asynchronous-connect runs.
type asyncProgram struct {
	name string
	n    int // fetches a run
	// cmd returns the command line of a run of mode "direct" or "socks" (SOCKS to socks).
	cmd func(e *env, mode, socks string, ids []string) []string
	// check returns an error unless the output has what the run fetched.
	check func(ids []string, r result) error
	// noC: the C torsocks cannot run it (a static Go program: LD_PRELOAD never sees its
	// connects, they would leak).
	noC bool
}

// wantBodies wants the body of ids[0] n times in the output.
func wantBodies(n int) func(ids []string, r result) error {
	return func(ids []string, r result) error {
		if got := strings.Count(r.stdout, helloBody(ids[0])); r.code != 0 || got != n {
			return fmt.Errorf("exit %d, %d of %d bodies: %s", r.code, got, n, lastLine(r.stderr+r.stdout))
		}
		return nil
	}
}

var asyncPrograms = []asyncProgram{
	{
		name: "python3 asyncio, 20 fetches", n: 20,
		cmd: func(e *env, mode, socks string, ids []string) []string {
			h, p, _ := strings.Cut(socks, ":")
			return []string{"/usr/bin/python3", "-c", pyAsyncMany, mode, h, p, "20", ids[0] + "." + nameDomain, "/t/" + ids[0] + "/"}
		},
		check: wantBodies(20),
	},
	{
		name: "curl --parallel, 20 URLs", n: 20,
		cmd: func(e *env, mode, socks string, ids []string) []string {
			args := []string{"curl", "-sS", "--max-time", "60", "--parallel", "--parallel-immediate", "--parallel-max", "20"}
			if mode == "socks" {
				args = append(args, "--socks5-hostname", socks)
			}
			for i := range 20 {
				args = append(args, fmt.Sprintf("http://%s.%s/t/%s/?%d", ids[0], nameDomain, ids[0], i))
			}
			return args
		},
		check: wantBodies(20),
	},
	{
		name: "node, 20 http.get", n: 20,
		cmd: func(e *env, mode, socks string, ids []string) []string {
			h, p, _ := strings.Cut(socks, ":")
			return []string{"node", "-e", nodeAsyncMany, mode, h, p, "20", ids[0] + "." + nameDomain, "/t/" + ids[0] + "/"}
		},
		check: wantBodies(20),
	},
	{
		name: "chromium, 20 sub-resources from 5 names", n: 20,
		cmd: func(e *env, mode, socks string, ids []string) []string {
			args := []string{"chromium", "--headless", "--no-sandbox", "--disable-gpu",
				"--user-data-dir=" + filepath.Join(e.dir, "chromium-"+ids[0]),
				"--no-first-run", "--disable-background-networking", "--disable-component-update",
				"--disable-sync", "--disable-default-apps", "--disable-breakpad", "--no-pings"}
			if mode == "socks" {
				args = append(args, "--proxy-server=socks5://"+socks)
			}
			return append(args, "--dump-dom", fmt.Sprintf("http://%s.%s/page/%s/?ids=%s", ids[0], nameDomain, ids[0], strings.Join(ids, ",")))
		},
		check: func(ids []string, r result) error {
			for k := range 20 {
				id := ids[k%len(ids)]
				if !strings.Contains(r.stdout, fmt.Sprintf("<p>async %s %d</p>", id, k)) {
					return fmt.Errorf("exit %d, sub-resource %d (%s) missing: %s", r.code, k, id, lastLine(r.stderr+r.stdout))
				}
			}
			return nil
		},
	},
	{
		name: "static Go program, 50 dials", n: 50,
		cmd: func(e *env, mode, socks string, ids []string) []string {
			return []string{filepath.Join(e.dir, "goasync"), mode, socks, "50", ids[0] + "." + nameDomain, "/t/" + ids[0] + "/"}
		},
		check: wantBodies(50),
		noC:   true,
	},
}

// asyncWay is how a program runs: the tool, and its mode.
type asyncWay struct{ name, tool, mode string }

var asyncWays = []asyncWay{{"socks", toolNone, "socks"}, {"torsocks-c", toolC, "direct"}, {"torsocks-go", toolGo, "direct"}}

func testAsync(t *testing.T, e *env) {
	if err := goBuild(filepath.Join(e.dir, "goasync"), "./testdata/goasync"); err != nil {
		t.Fatal(err)
	}
	socks := e.net.SocksAddr.String()
	var wg sync.WaitGroup
	for _, p := range asyncPrograms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(p.name, func(t *testing.T) { e.asyncRuns(t, p, socks) })
		}()
	}
	wg.Wait()
}

// asyncRuns runs p asyncRounds times under each way, interleaved, and logs the medians.
func (e *env) asyncRuns(t *testing.T, p asyncProgram, socks string) {
	durs := map[string][]time.Duration{}
	for round := 0; round < asyncRounds; round++ {
		for _, w := range asyncWays {
			if w.tool == toolC && (p.noC || e.cVersion == "") {
				continue
			}
			ids := make([]string, 5)
			for i := range ids {
				ids[i] = e.newID(w.tool)
			}
			timeout := runTimeout
			if w.tool == toolC {
				timeout = 20 * time.Second // chromium hangs under it (programs_test.go)
			}
			r := e.runFor(t, timeout, w.tool, nil, "", p.cmd(e, w.mode, socks, ids)...)
			if err := p.check(ids, r); err != nil {
				if w.tool == toolC {
					t.Logf("%s under the C torsocks: %v", p.name, err)
					durs[w.name] = append(durs[w.name], -1)
					continue
				}
				t.Errorf("%s, %s: %v\n%s", p.name, w.name, err, r.stderr)
				continue
			}
			durs[w.name] = append(durs[w.name], r.dur)
		}
	}
	ref := medianDur(durs["socks"])
	var b strings.Builder
	fmt.Fprintf(&b, "async %s (medians of %d):", p.name, asyncRounds)
	for _, w := range asyncWays {
		d, ok := durs[w.name]
		if !ok {
			continue
		}
		m := medianDur(d)
		if m < 0 {
			fmt.Fprintf(&b, "  %s failed %v", w.name, d)
			continue
		}
		fmt.Fprintf(&b, "  %s %v (%.2fx)", w.name, m.Round(time.Millisecond), float64(m)/float64(ref))
	}
	t.Log(b.String())
}

// medianDur is the median of d (a failed run, -1, counts as the longest).
func medianDur(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	for i := range s {
		if s[i] < 0 {
			s[i] = 1 << 62
		}
	}
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	if len(s) == 0 {
		return 0
	}
	if m := s[len(s)/2]; m != 1<<62 {
		return m
	}
	return -1
}
