package daemon

// Unit tests of the plain-HTTP policy. Nothing here opens a connection:
// the transport is checked against a fake base that records what reaches
// it, so hosts off this machine are named but never dialled.

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/internal/errdefs"
)

func TestIsLoopbackHost(t *testing.T) {
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"localhost:5000", true},
		{"LocalHost:5000", true},
		{"127.0.0.1", true},
		{"127.5.5.5:80", true},
		{"[::1]:5000", true},
		{"[::1]", true},
		{"::1", true},
		// Resolved through DNS on a host without nss-myhostname, so it
		// may be anywhere.
		{"foo.localhost", false},
		{"foo.localhost:5000", false},
		{"localhost.example.com", false},
		{"127.0.0.1.nip.io", false},
		{"10.0.0.1", false},
		{"192.168.1.1:5000", false},
		{"[fe80::1]:5000", false},
		{"0.0.0.0:5000", false},
		{"example.com", false},
		{"example.com:443", false},
	} {
		if got := isLoopbackHost(tt.host); got != tt.want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

func TestPolicyAllowsHTTP(t *testing.T) {
	p := registryPolicy{insecure: []string{"registry.internal", "build.internal:5000", "10.1.2.3:5000"}}
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"127.0.0.1:5000", true}, // loopback, listed or not
		{"localhost", true},
		{"registry.internal", true}, // listed as a host: any port
		{"registry.internal:5000", true},
		{"registry.internal:443", true},
		{"build.internal:5000", true}, // listed as host:port: that port only
		{"build.internal", false},
		{"build.internal:6000", false},
		{"10.1.2.3:5000", true},
		{"10.1.2.3", false},
		{"10.1.2.4:5000", false},
		{"other.internal", false},
		{"sub.registry.internal", false},
		{"example.com", false},
	} {
		if got := p.allowsHTTP(tt.host); got != tt.want {
			t.Errorf("allowsHTTP(%q) with insecure %v = %v, want %v", tt.host, p.insecure, got, tt.want)
		}
	}
	if (registryPolicy{}).allowsHTTP("192.168.1.1:5000") {
		t.Error("an empty policy allows plain HTTP to a private-range host")
	}
}

// pullRecordingTransport answers every request with an empty 200 (or err)
// and records the URLs it was given; it never touches the network.
type pullRecordingTransport struct {
	err error

	mu   sync.Mutex
	urls []string // guarded by mu
}

func (f *pullRecordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.urls = append(f.urls, req.URL.String())
	f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: req}, nil
}

func (f *pullRecordingTransport) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.urls...)
}

func TestPolicyTransport(t *testing.T) {
	for _, tt := range []struct {
		url      string
		insecure []string
		allowed  bool
	}{
		{"http://192.168.1.1:5000/v2/", nil, false},
		{"http://10.0.0.1/v2/", nil, false},
		{"http://example.com/v2/", nil, false},
		{"http://foo.localhost:5000/v2/", nil, false},
		{"http://registry.internal/v2/", []string{"registry.internal:5000"}, false},
		{"http://registry.internal:6000/v2/", []string{"registry.internal:5000"}, false},
		{"https://example.com/v2/", nil, true},
		{"https://10.0.0.1/v2/", nil, true},
		{"https://192.168.1.1:5000/v2/library/app/blobs/sha256:00", nil, true},
		{"http://127.0.0.1:5000/v2/", nil, true},
		{"http://127.9.9.9/v2/", nil, true},
		{"http://localhost:5000/v2/", nil, true},
		{"http://[::1]:5000/v2/", nil, true},
		{"http://registry.internal:5000/v2/", []string{"registry.internal:5000"}, true},
		{"http://registry.internal:5000/v2/", []string{"registry.internal"}, true},
		{"http://192.168.1.1:5000/v2/", []string{"192.168.1.1:5000"}, true},
	} {
		base := &pullRecordingTransport{}
		rt := registryPolicy{insecure: tt.insecure}.transport(base)
		req, err := http.NewRequest(http.MethodGet, tt.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := rt.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		calls := base.calls()
		if tt.allowed {
			if err != nil || len(calls) != 1 || calls[0] != tt.url {
				t.Errorf("GET %s with insecure %v: %v, base saw %v; want it passed to the base transport", tt.url, tt.insecure, err, calls)
			}
			continue
		}
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), req.URL.Host) || !strings.Contains(err.Error(), "insecure_registries") {
			t.Errorf("GET %s with insecure %v: %v; want failed precondition naming the host and insecure_registries", tt.url, tt.insecure, err)
		}
		if len(calls) != 0 {
			t.Errorf("GET %s with insecure %v reached the base transport: %v", tt.url, tt.insecure, calls)
		}
	}
}

// go-containerregistry falls back to plain HTTP for private-range hosts
// when HTTPS fails; the policy transport must stop that fallback.
func TestPolicyStopsHTTPFallbackToPrivateHosts(t *testing.T) {
	p := registryPolicy{}
	ref, err := p.parseRef("192.168.1.1:5000/app:1")
	if err != nil {
		t.Fatal(err)
	}
	base := &pullRecordingTransport{err: errors.New("tls: handshake failure (fake)")}
	_, err = remote.Get(ref, remote.WithContext(context.Background()), remote.WithTransport(p.transport(base)),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
	if err == nil || !strings.Contains(err.Error(), "refusing plain HTTP") {
		t.Errorf("remote.Get of a private-range registry whose HTTPS fails = %v, want the plain-HTTP fallback refused", err)
	}
	calls := base.calls()
	if len(calls) == 0 {
		t.Fatal("the base transport saw no request; want the HTTPS attempt")
	}
	for _, u := range calls {
		if !strings.HasPrefix(u, "https://") {
			t.Errorf("the base transport was asked for %s", u)
		}
	}
}

func TestParseRefMarksPlainHTTPRegistries(t *testing.T) {
	p := registryPolicy{insecure: []string{"registry.internal:5000", "mirror.internal"}}
	for _, tt := range []struct {
		ref, scheme string
	}{
		{"localhost/app:1", "http"}, // go-containerregistry alone would say https
		{"localhost:5000/app:1", "http"},
		{"127.0.0.1:5000/app@sha256:" + strings.Repeat("a", 64), "http"},
		{"127.3.0.1:5000/app:1", "http"},
		{"[::1]:5000/app:1", "http"},
		{"registry.internal:5000/team/app:1", "http"},
		{"mirror.internal/app:1", "http"},
		{"mirror.internal:8080/app:1", "http"},
		{"registry.internal/app:1", "https"},
		{"example.com/app:1", "https"},
		{"docker.io/library/debian:bookworm", "https"},
		{"debian", "https"},
	} {
		r, err := p.parseRef(tt.ref)
		if err != nil {
			t.Errorf("parseRef(%q): %v", tt.ref, err)
			continue
		}
		if got := r.Context().Registry.Scheme(); got != tt.scheme {
			t.Errorf("parseRef(%q) gives scheme %s, want %s", tt.ref, got, tt.scheme)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "app:tag:extra", "app@sha256:short", "app@md5:abc"} {
		if _, err := p.parseRef(bad); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), bad) {
			t.Errorf("parseRef(%q) = %v, want invalid argument naming it", bad, err)
		}
	}
}
