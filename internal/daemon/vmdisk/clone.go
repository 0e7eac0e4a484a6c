package vmdisk

import (
	"context"
	"errors"
	"fmt"
)

// Clone makes dst, a new file, a copy of src: a reflink clone when the
// file system supports it (StrategyReflink), else a sparse copy
// (StrategyCopy). Only the copy is slow, and only it watches ctx.
func Clone(ctx context.Context, src, dst string) (Strategy, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	err := Reflink(src, dst)
	if err == nil {
		return StrategyReflink, nil
	}
	if !errors.Is(err, ErrReflinkUnsupported) {
		return "", err
	}
	if err := SparseCopy(ctx, src, dst); err != nil {
		return "", err
	}
	return StrategyCopy, nil
}
