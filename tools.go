//go:build tools

// Temporary: pins the dependencies every package will use while the packages land in parallel.
// Removed once each is imported by real code.

package leaksafe

import (
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/prometheus/promql"
	_ "github.com/prometheus/prometheus/tsdb"
	_ "github.com/prometheus/prometheus/util/logging"
	_ "github.com/prometheus/prometheus/util/pool"
	_ "github.com/stretchr/testify/require"
	_ "go.uber.org/goleak"
	_ "golang.org/x/sync/errgroup"
	_ "gonum.org/v1/plot"
	_ "gonum.org/v1/plot/vg"
	_ "google.golang.org/grpc"
)
