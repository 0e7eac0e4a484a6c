package daemon

import "time"

// progressInterval is how often waiting loops report progress.
const progressInterval = 200 * time.Millisecond

func newTicker() *time.Ticker { return time.NewTicker(progressInterval) }
