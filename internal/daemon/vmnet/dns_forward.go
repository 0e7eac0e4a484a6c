package vmnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// forwarder sends a query to the upstream resolvers and returns the reply.
type forwarder interface {
	exchange(ctx context.Context, req *dns.Msg, tcp bool) (*dns.Msg, error)
	close()
}

// nsForwarder forwards from inside the VM network's namespace, so that
// the upstreams are the ones reachable from there (for a named namespace,
// its own loopback and routes, not the host's). A socket joins the
// namespace of the thread that creates it, so the exchanges run on a
// fixed set of worker goroutines, each locked to a thread inside the
// namespace (Namespace.Go). The workers also bound how many forwarded
// queries are in flight; a full queue is answered SERVFAIL at once.
type nsForwarder struct {
	upstreams []netip.AddrPort
	timeout   time.Duration
	jobs      chan fwdJob
	stop      chan struct{}
	stopOnce  sync.Once
	wg        sync.WaitGroup
}

type fwdJob struct {
	ctx context.Context
	req *dns.Msg
	tcp bool
	out chan<- fwdResult // capacity 1: a worker never blocks on it
}

type fwdResult struct {
	msg *dns.Msg
	err error
}

var _ forwarder = (*nsForwarder)(nil)

var errQueueFull = errors.New("too many forwarded queries in flight")

func newNSForwarder(ns *Namespace, upstreams []netip.AddrPort, timeout time.Duration, workers int) (*nsForwarder, error) {
	f := &nsForwarder{
		upstreams: upstreams,
		timeout:   timeout,
		jobs:      make(chan fwdJob, 16*workers),
		stop:      make(chan struct{}),
	}
	joined := make(chan error, workers)
	for range workers {
		f.wg.Add(1)
		ns.Go(func(err error) {
			defer f.wg.Done()
			joined <- err
			if err == nil {
				f.work()
			}
		})
	}
	var errs []error
	for range workers {
		errs = append(errs, <-joined)
	}
	if err := errors.Join(errs...); err != nil {
		f.close()
		return nil, fmt.Errorf("dns forwarders: %w", err)
	}
	return f, nil
}

func (f *nsForwarder) work() {
	for {
		select {
		case <-f.stop:
			return
		case j := <-f.jobs:
			if j.ctx.Err() != nil {
				j.out <- fwdResult{err: j.ctx.Err()}
				continue
			}
			m, err := f.try(j.ctx, j.req, j.tcp)
			j.out <- fwdResult{m, err}
		}
	}
}

// try asks each upstream in turn over the client's transport (a
// truncated UDP reply goes back truncated; the client retries over TCP).
func (f *nsForwarder) try(ctx context.Context, req *dns.Msg, tcp bool) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Timeout: f.timeout}
	if tcp {
		c.Net = "tcp"
	}
	var errs []error
	for _, up := range f.upstreams {
		m, _, err := c.ExchangeContext(ctx, req, up.String())
		if err == nil {
			return m, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func (f *nsForwarder) exchange(ctx context.Context, req *dns.Msg, tcp bool) (*dns.Msg, error) {
	out := make(chan fwdResult, 1)
	select {
	case f.jobs <- fwdJob{ctx: ctx, req: req, tcp: tcp, out: out}:
	case <-f.stop:
		return nil, ErrClosed
	default:
		return nil, errQueueFull
	}
	select {
	case r := <-out:
		return r.msg, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *nsForwarder) close() {
	f.stopOnce.Do(func() { close(f.stop) })
	f.wg.Wait()
}

// ResolvConfUpstreams reads the nameservers of a resolv.conf (port 53).
// A missing file has none.
func ResolvConfUpstreams(path string) ([]netip.AddrPort, error) {
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read resolvers: %w", err)
	}
	defer fh.Close()
	var ups []netip.AddrPort
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		ups = append(ups, netip.AddrPortFrom(a.WithZone(""), 53))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read resolvers from %s: %w", path, err)
	}
	return ups, nil
}
