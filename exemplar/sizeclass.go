package exemplar

// Memory accounting: the store charges what the Go heap really holds for each
// allocation it keeps, i.e. the request rounded up to the runtime's size class
// (plus the malloc header Go adds to pointerful objects above 512 bytes), not
// the len() of the data. These tables mirror internal/runtime/gc/sizeclasses.go
// (Go 1.22 onwards); TestAllocSizeMatchesRuntime checks them against the
// running runtime so a Go upgrade that changes them fails loudly.

const (
	maxSmallSize           = 32768
	runtimePageSize        = 8192
	mallocHeaderSize       = 8
	minSizeForMallocHeader = 512
)

var sizeClasses = [...]uint16{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472, 9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264, 28672, 32768}

// allocSize returns the bytes the Go heap uses for an allocation of size bytes.
// pointers says whether the allocated type contains pointers.
func allocSize(size int64, pointers bool) int64 {
	if size <= 0 {
		return 0
	}
	req := size
	if req <= maxSmallSize-mallocHeaderSize {
		if pointers && req > minSizeForMallocHeader {
			req += mallocHeaderSize
		}
		// Binary search: the table is small and this is not on a per-exemplar path
		// except for series label strings.
		lo, hi := 0, len(sizeClasses)-1
		for lo < hi {
			mid := (lo + hi) / 2
			if int64(sizeClasses[mid]) < req {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		return int64(sizeClasses[lo])
	}
	return (req + runtimePageSize - 1) &^ (runtimePageSize - 1)
}
