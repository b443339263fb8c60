package redistest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Blackhole is a TCP proxy whose connections can be made to swallow
// everything silently, as a broken network path does (a NAT or firewall
// that dropped its state): writes succeed, nothing arrives, no error is
// seen. Connections made after Swallow work normally.
type Blackhole struct {
	ln    net.Listener
	mu    sync.Mutex
	holes []*atomic.Bool // one per connection not swallowed yet
	conns []net.Conn     // every connection, closed when the test ends
	wg    sync.WaitGroup
}

// NewBlackhole starts a proxy to target on a free loopback port and stops
// it when tb ends.
func NewBlackhole(tb testing.TB, target string) *Blackhole {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Blackhole{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			dead := &atomic.Bool{}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.holes = append(p.holes, dead)
			p.mu.Unlock()
			for _, pair := range [][2]net.Conn{{c, u}, {u, c}} {
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					buf := make([]byte, 32<<10)
					for {
						n, err := pair[0].Read(buf)
						if err != nil {
							pair[1].Close()
							return
						}
						if !dead.Load() {
							pair[1].Write(buf[:n])
						}
					}
				}()
			}
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// Addr is host:port of the proxy.
func (p *Blackhole) Addr() string { return p.ln.Addr().String() }

// Swallow makes every connection open now go silent for good.
func (p *Blackhole) Swallow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.holes {
		d.Store(true)
	}
	p.holes = nil
}
