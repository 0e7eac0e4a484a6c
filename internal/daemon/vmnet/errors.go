package vmnet

import "banger/internal/errdefs"

// kindError is a sentinel of this package that is also one of errdefs'
// kinds, so callers can test either: errors.Is(err, ErrLinkNotFound) here,
// errdefs.IsNotFound(err) at the RPC edge.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

var (
	// ErrLinkNotFound: no network interface has that name in the namespace.
	ErrLinkNotFound error = &kindError{"link not found", errdefs.ErrNotFound}
	// ErrLinkExists: a network interface already has that name.
	ErrLinkExists error = &kindError{"link already exists", errdefs.ErrAlreadyExists}
	// ErrTableNotFound: banger's nftables table is not installed.
	ErrTableNotFound error = &kindError{"nftables table not found", errdefs.ErrNotFound}
	// ErrNetNSNotFound: no named network namespace has that name.
	ErrNetNSNotFound error = &kindError{"network namespace not found", errdefs.ErrNotFound}
	// ErrExhausted: every guest address of the subnet is taken.
	ErrExhausted error = &kindError{"no free guest address in the subnet", errdefs.ErrUnavailable}
	// ErrClosed: the object was closed.
	ErrClosed error = &kindError{"closed", errdefs.ErrUnavailable}
)
