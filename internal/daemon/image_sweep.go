package daemon

import (
	"context"
	"os"

	"banger/internal/errdefs"
)

// sweepOrphanImages removes image directories no row owns: a crash between
// deleting an image's row and its files (image rm) leaves one.
func (m *imageManager) sweepOrphanImages(ctx context.Context) error {
	entries, err := os.ReadDir(m.layout.ImagesDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, err := m.store.GetImage(ctx, e.Name()); errdefs.IsNotFound(err) {
			if err := os.RemoveAll(m.layout.ImageDir(e.Name())); err != nil {
				return err
			}
			m.logger.Warn("removed an image directory no record owns", "dir", e.Name())
		} else if err != nil {
			return err
		}
	}
	return nil
}
