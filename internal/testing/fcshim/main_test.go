package fcshim

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	removeShared()
	os.Exit(code)
}
