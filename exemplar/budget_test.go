package exemplar

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

func newTenants(t *testing.T, b *Budget, n int) []*Store {
	t.Helper()
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = mustNew(t, Options{MaxExemplars: 1 << 20, Budget: b})
	}
	return stores
}

func tenantSeries(tenant, i int) labels.Labels {
	return labels.FromStrings("__name__", "http_request_duration_seconds_bucket", "tenant", strconv.Itoa(tenant),
		"pod", fmt.Sprintf("api-%d", i%40), "le", strconv.Itoa(i%12))
}

func sumBytes(stores []*Store) int64 {
	var n int64
	for _, s := range stores {
		n += s.Stats().Bytes
	}
	return n
}

func TestBudgetOptionsThatCannotWorkAreRefused(t *testing.T) {
	for _, o := range []BudgetOptions{{}, {MaxBytes: MinBytes - 1}, {MaxBytes: MinBytes, FloorBytes: -1}, {MaxBytes: MinBytes, FloorBytes: MinBytes + 1}} {
		_, err := NewBudget(o)
		require.ErrorIs(t, err, ErrInvalidOptions, "%+v", o)
	}
	b, err := NewBudget(BudgetOptions{MaxBytes: 1 << 20, FloorBytes: 256 << 10})
	require.NoError(t, err)
	newTenants(t, b, 4)
	_, err = New(Options{MaxExemplars: 10, Budget: b})
	require.ErrorIs(t, err, ErrInvalidOptions, "a fifth floor of 256 KiB does not fit in 1 MiB")
	require.Equal(t, 4, b.Stats().Stores)
}

func TestBudgetNotMadeByNewBudgetIsRefused(t *testing.T) {
	var zero Budget
	s, err := New(Options{MaxExemplars: 10, Budget: &zero})
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.Nil(t, s)
	require.Equal(t, BudgetStats{}, zero.Stats(), "a zero Budget answers Stats without panicking")
}

func TestNoisyTenantCannotEvictOtherTenantsBelowTheirFloor(t *testing.T) {
	const (
		tenants = 10
		max     = 2 << 20
		floor   = 96 << 10
	)
	reg := prometheus.NewRegistry()
	b, err := NewBudget(BudgetOptions{MaxBytes: max, FloorBytes: floor, Registerer: reg})
	require.NoError(t, err)
	stores := newTenants(t, b, tenants)
	quiet, noisy := stores[:tenants-1], stores[tenants-1]

	// The quiet tenants fill up first, each to about twice its floor.
	ts := int64(0)
	for q, s := range quiet {
		for i := range 2500 {
			ts++
			require.NoError(t, s.AddExemplar(tenantSeries(q, i), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: ts, HasTs: true}))
		}
		require.Greater(t, s.Stats().Bytes, int64(floor))
	}
	// Then the noisy tenant sends ten times that.
	for i := range 60_000 {
		ts++
		require.NoError(t, noisy.AddExemplar(tenantSeries(tenants, i), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: ts, HasTs: true}))
		if i%5000 == 0 {
			require.LessOrEqual(t, b.Stats().UsedBytes, int64(max))
			requireInvariants(t, noisy)
		}
	}

	require.Equal(t, sumBytes(stores), b.Stats().UsedBytes, "the budget counts exactly what its stores hold")
	require.LessOrEqual(t, b.Stats().UsedBytes, int64(max))
	for q, s := range quiet {
		st := s.Stats()
		require.Positive(t, st.Exemplars, "tenant %d lost everything", q)
		// Evicted down to the floor and no further; one eviction can free a page
		// or a series page at most.
		require.Greater(t, st.Bytes, int64(floor)-seriesPageBytes-pageBytes, "tenant %d", q)
		require.LessOrEqual(t, st.Bytes, int64(floor)+pageBytes, "tenant %d kept more than its share", q)
		require.Positive(t, st.Evicted.Budget, "tenant %d paid for the noisy one", q)
		require.Equal(t, int64(2500)*int64(q+1), st.NewestTimestamp, "tenant %d kept its newest", q)
		requireInvariants(t, s)
	}
	nst := noisy.Stats()
	require.Positive(t, nst.Evicted.Budget, "once the others are at their floor the noisy tenant evicts its own oldest")
	require.Greater(t, nst.Bytes, int64(max)/2, "the noisy tenant has the rest of the budget")
	require.Equal(t, float64(b.Stats().UsedBytes), gatheredValue(t, reg, "prometheus_tsdb_exemplar_budget_used_bytes"))

	// A quiet tenant still gets room for new exemplars: the oldest exemplar
	// above a floor is now the noisy tenant's.
	quietBefore := quiet[0].Stats()
	for i := range 200 {
		ts++
		require.NoError(t, quiet[0].AddExemplar(tenantSeries(0, i), exemplar.Exemplar{Labels: traceID(100_000 + i), Value: 2, Ts: ts, HasTs: true}))
	}
	require.Greater(t, quiet[0].Stats().Exemplars, quietBefore.Exemplars)
	require.Greater(t, noisy.Stats().Evicted.Budget, nst.Evicted.Budget)

	// Closing a tenant returns its bytes.
	used := b.Stats().UsedBytes
	closed := quiet[1].Stats().Bytes
	require.NoError(t, quiet[1].Close())
	require.Equal(t, used-closed, b.Stats().UsedBytes)
	require.Equal(t, tenants-1, b.Stats().Stores)
}

func TestTenantBehindAnotherTenantsClockIsNotRefusedBelowItsFloor(t *testing.T) {
	// Tenants' timestamps are not comparable: one whose exemplars arrive five
	// minutes late (a remote-write backlog) was refused as a stale re-add
	// because they were older than the other tenant's oldest exemplar, and
	// starved far below its floor. Stale re-adds are judged against the
	// tenant's own exemplars, and only once it holds more than its floor.
	const floor = 128 << 10
	b, err := NewBudget(BudgetOptions{MaxBytes: 1 << 20, FloorBytes: floor})
	require.NoError(t, err)
	noisy := mustNew(t, Options{MaxExemplars: 1 << 20, Budget: b})
	lagging := mustNew(t, Options{MaxExemplars: 1 << 20, Budget: b})
	now := int64(1_700_000_000_000)
	for i := 0; noisy.Stats().Evicted.Budget < 1000; i++ {
		require.NoError(t, noisy.AddExemplar(tenantSeries(0, i%500), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: now + int64(i), HasTs: true}))
	}
	require.Greater(t, noisy.Stats().OldestTimestamp, now, "the noisy tenant evicts its own oldest")

	behind := now - 5*60*1000
	i := 0
	for ; lagging.Stats().Bytes <= floor; i++ {
		require.NoError(t, lagging.AddExemplar(tenantSeries(1, i%50), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: behind + int64(i), HasTs: true}),
			"add %d, the lagging tenant holding %d bytes", i, lagging.Stats().Bytes)
	}
	st := lagging.Stats()
	require.Zero(t, st.Refused.StaleFull)
	require.Equal(t, int64(i), st.Exemplars, "nothing of its own was evicted up to its floor")
	require.Greater(t, noisy.Stats().Evicted.Budget, uint64(1000), "the noisy tenant paid for it")
	require.LessOrEqual(t, b.Stats().UsedBytes, b.Stats().MaxBytes)
	require.Equal(t, sumBytes([]*Store{noisy, lagging}), b.Stats().UsedBytes)

	// Above its floor the tenant's own oldest goes next: an exemplar older than
	// everything it holds is a stale re-add, refused as in a full store. (Its
	// series labels are large so that storing it needs an eviction whatever
	// the budget has left free.)
	resent := labels.FromStrings("__name__", "resent", "tenant", "1", "blob", strings.Repeat("x", 64<<10))
	stale := exemplar.Exemplar{Labels: traceID(-1), Value: 1, Ts: behind - 1, HasTs: true}
	require.ErrorIs(t, lagging.ValidateExemplar(resent, stale), storage.ErrOutOfOrderExemplar)
	require.ErrorIs(t, lagging.AddExemplar(resent, stale), storage.ErrOutOfOrderExemplar)
	require.Equal(t, uint64(1), lagging.Stats().Refused.StaleFull)
	requireInvariants(t, noisy)
	requireInvariants(t, lagging)
}

func TestTenantsSharingABudgetEvictFromEachOtherConcurrently(t *testing.T) {
	const tenants = 10
	b, err := NewBudget(BudgetOptions{MaxBytes: 1 << 20, FloorBytes: 64 << 10})
	require.NoError(t, err)
	stores := newTenants(t, b, tenants)
	adds := 6000
	if raceEnabled || testing.Short() {
		adds = 2000
	}
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := adds
			if i == 0 {
				n *= 5 // noisy
			}
			for j := range n {
				err := s.AddExemplar(tenantSeries(i, j), exemplar.Exemplar{Labels: traceID(j), Value: 1, Ts: int64(j), HasTs: true})
				if err != nil && err != storage.ErrOutOfOrderExemplar {
					t.Errorf("tenant %d add %d: %v", i, j, err)
					return
				}
				if j%50 == 0 {
					_ = selectAll(t, s)
				}
			}
		}()
	}
	wg.Wait()
	require.Equal(t, sumBytes(stores), b.Stats().UsedBytes)
	require.LessOrEqual(t, b.Stats().UsedBytes, int64(1<<20))
	for _, s := range stores {
		requireInvariants(t, s)
		require.Positive(t, s.Stats().Exemplars)
	}
}

func TestBudgetMemberWhoseAddAgesOutEverythingEvictsFromTheOthers(t *testing.T) {
	// The add moves the newest timestamp so far that all of the store's own
	// exemplars age out, and the budget still lacks room. The store must judge
	// itself by what it holds now (nothing), not by what it last published:
	// evicting from its own empty ring indexed past its pages, panicked and
	// left the store locked.
	b, err := NewBudget(BudgetOptions{MaxBytes: 256 << 10})
	require.NoError(t, err)
	s := mustNew(t, Options{MaxExemplars: 1000, MaxAge: time.Second, Budget: b})
	other := mustNew(t, Options{MaxExemplars: 1 << 20, Budget: b})
	for i := range 10 {
		require.NoError(t, s.AddExemplar(tenantSeries(0, 0), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(i), HasTs: true}))
	}
	for i := 0; b.Stats().UsedBytes < b.Stats().MaxBytes-16<<10; i++ {
		require.NoError(t, other.AddExemplar(tenantSeries(1, i), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(100 + i), HasTs: true}))
	}
	otherBefore := other.Stats()

	big := labels.FromStrings("__name__", "big", "blob", strings.Repeat("x", 40<<10))
	e := exemplar.Exemplar{Labels: traceID(1), Value: 1, Ts: 1 << 40, HasTs: true}
	require.NoError(t, s.ValidateExemplar(big, e))
	require.NoError(t, s.AddExemplar(big, e))

	st := s.Stats()
	require.Equal(t, int64(1), st.Exemplars)
	require.Equal(t, uint64(10), st.Evicted.Age)
	require.Greater(t, other.Stats().Evicted.Budget, otherBefore.Evicted.Budget, "the room came from the other member")
	require.Equal(t, sumBytes([]*Store{s, other}), b.Stats().UsedBytes)
	require.LessOrEqual(t, b.Stats().UsedBytes, b.Stats().MaxBytes)
	requireInvariants(t, s)
	requireInvariants(t, other)
}

func TestExemplarTooLargeForTheBudgetIsRefusedWithoutEvictingAnyone(t *testing.T) {
	// One bad request must not wipe the other tenants: an exemplar that cannot
	// fit even with every other member at its floor is refused up front, and
	// ValidateExemplar says so too.
	for _, floor := range []int64{0, 32 << 10} {
		t.Run(fmt.Sprintf("floor=%d", floor), func(t *testing.T) {
			b, err := NewBudget(BudgetOptions{MaxBytes: 256 << 10, FloorBytes: floor})
			require.NoError(t, err)
			other := mustNew(t, Options{MaxExemplars: 1 << 20, Budget: b})
			s := mustNew(t, Options{MaxExemplars: 1 << 20, Budget: b})
			for i := range 2000 {
				require.NoError(t, other.AddExemplar(tenantSeries(1, i), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(i), HasTs: true}))
			}
			require.NoError(t, s.AddExemplar(tenantSeries(2, 0), exemplar.Exemplar{Labels: traceID(0), Value: 1, Ts: 5000, HasTs: true}))
			otherBefore, sBefore := other.Stats(), s.Stats()

			huge := labels.FromStrings("__name__", "huge", "blob", strings.Repeat("x", 300<<10))
			e := exemplar.Exemplar{Labels: traceID(1), Value: 1, Ts: 6000, HasTs: true}
			require.ErrorIs(t, s.ValidateExemplar(huge, e), ErrExemplarTooLarge)
			require.ErrorIs(t, s.AddExemplar(huge, e), ErrExemplarTooLarge)
			require.Equal(t, otherBefore, other.Stats(), "nothing was evicted from the other tenant")
			require.Equal(t, sBefore, s.Stats(), "nothing changed in the store refusing it")
			require.Equal(t, sumBytes([]*Store{s, other}), b.Stats().UsedBytes)
		})
	}
}
