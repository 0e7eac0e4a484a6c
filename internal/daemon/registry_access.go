package daemon

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"banger/internal/errdefs"
	"banger/internal/rpc"
)

// registryPolicy decides which registries may be reached over plain HTTP:
// loopback ones always (as docker does), others only when the config lists
// them. go-containerregistry on its own would also allow private-range
// (RFC 1918) hosts; the transport below refuses those unless listed.
type registryPolicy struct {
	insecure []string // host or host:port, from config
}

// isLoopbackHost reports whether host ("h" or "h:port") is localhost,
// in 127.0.0.0/8 or ::1. Other names under .localhost are not: the host's
// resolver (glibc without nss-myhostname, Go's own) may ask DNS for them,
// which can answer with any address, and plain HTTP to a remote host
// would carry the user's credentials and an unverifiable image.
func isLoopbackHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func (p registryPolicy) allowsHTTP(host string) bool {
	if isLoopbackHost(host) {
		return true
	}
	if slices.Contains(p.insecure, host) {
		return true
	}
	h, _, err := net.SplitHostPort(host)
	return err == nil && slices.Contains(p.insecure, h)
}

// parseRef parses an image reference, marking registries that may use
// plain HTTP so go-containerregistry falls back to it for them.
func (p registryPolicy) parseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	if p.allowsHTTP(r.Context().RegistryStr()) {
		r, err = name.ParseReference(ref, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("image reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
		}
	}
	return r, nil
}

// transport wraps base so that plain-HTTP requests go only to hosts the
// policy allows.
func (p registryPolicy) transport(base http.RoundTripper) http.RoundTripper {
	return policyTransport{policy: p, base: base}
}

type policyTransport struct {
	policy registryPolicy
	base   http.RoundTripper
}

func (t policyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !t.policy.allowsHTTP(req.URL.Host) {
		return nil, fmt.Errorf("refusing plain HTTP to registry %s: only loopback registries and those listed in insecure_registries may be reached without TLS: %w", req.URL.Host, errdefs.ErrFailedPrecondition)
	}
	return t.base.RoundTrip(req)
}

// authFor turns the credential the CLI resolved into an authenticator.
func authFor(a *rpc.RegistryAuth) authn.Authenticator {
	if a == nil || *a == (rpc.RegistryAuth{}) {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{
		Username:      a.Username,
		Password:      a.Password,
		Auth:          a.Auth,
		IdentityToken: a.IdentityToken,
		RegistryToken: a.RegistryToken,
	})
}
