// Package errdefs holds banger's few sentinel errors. Packages wrap them
// with context (the VM or image name) via %w; only the RPC dispatch edge
// maps them to JSON-RPC error codes, and the client maps the codes back so
// errors.Is works on both sides of the socket.
package errdefs

import "errors"

var (
	// ErrNotFound: the named object (VM, image, kernel, operation) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: an object with that name or key already exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: the caller passed a value that can never be valid.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrBusy: the object is in use (a VM uses the image, a lock is held).
	ErrBusy = errors.New("busy")
	// ErrFailedPrecondition: the object is in the wrong state for the
	// request (stop a stopped VM, a newer schema than this binary knows).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrUnavailable: a dependency is missing or down (no daemon, no VMM).
	ErrUnavailable = errors.New("unavailable")
	// ErrCanceled: the operation was cancelled by its caller or by shutdown.
	ErrCanceled = errors.New("canceled")
)

// Is* helpers read better at call sites than errors.Is(err, errdefs.X).

func IsNotFound(err error) bool           { return errors.Is(err, ErrNotFound) }
func IsAlreadyExists(err error) bool      { return errors.Is(err, ErrAlreadyExists) }
func IsInvalidArgument(err error) bool    { return errors.Is(err, ErrInvalidArgument) }
func IsBusy(err error) bool               { return errors.Is(err, ErrBusy) }
func IsFailedPrecondition(err error) bool { return errors.Is(err, ErrFailedPrecondition) }
func IsUnavailable(err error) bool        { return errors.Is(err, ErrUnavailable) }
func IsCanceled(err error) bool           { return errors.Is(err, ErrCanceled) }
