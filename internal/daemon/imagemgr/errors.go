package imagemgr

import (
	"errors"
	"fmt"
	"io/fs"

	"banger/internal/errdefs"
)

// EntryError is the error ApplyLayer returns when an entry is refused or
// cannot be applied: it names the layer and the entry. Err wraps
// errdefs.ErrInvalidArgument when the image itself is at fault.
type EntryError struct {
	Layer     int    // 1-based position of the layer in this Flattener
	LayerName string // what the caller called it, usually its digest
	Entry     string // the entry's name as the tar has it
	Err       error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("%s: entry %q: %v", layerLabel(e.Layer, e.LayerName), e.Entry, e.Err)
}

// layerLabel names a layer in messages: "layer 2 (sha256:…)".
func layerLabel(n int, name string) string {
	if name == "" {
		return fmt.Sprintf("layer %d", n)
	}
	return fmt.Sprintf("layer %d (%s)", n, name)
}

func (e *EntryError) Unwrap() error { return e.Err }

// refuse builds the error for input that can never be valid.
func refuse(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}

// errNotExist is returned by lookups that find a component missing.
var errNotExist = fs.ErrNotExist

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
