// Package slogx is a JSON-lines file slog.Handler that cannot repeat the Prometheus 3.0.0
// query-log incident.
//
// # The incident
//
// With the query log on, Prometheus 3.0.0 was OOM-killed 10–15 minutes after start while its
// query log grew at ~500 MB/s (1.7 TB seen); slog buffers held over half the heap. The
// query logger's With() mutated shared state, so every query's attributes piled onto the
// ones before instead of going to an independent logger. A FileHandler's With never
// mutates, a derived handler holds only its own attributes, and every cap is explicit.
//
// # Usage
//
//	h, err := slogx.OpenJSONFile("/var/lib/prometheus/query.log", &slogx.Options{
//		MaxBytes:   256 << 20, // rotate to query.log.1 … query.log.3
//		MaxBackups: 3,
//		Registerer: prometheus.DefaultRegisterer,
//	})
//	if err != nil {
//		return err
//	}
//	engine.SetQueryLogger(h) // promql closes the previous logger, and later this one
//	// or: logger := slog.New(h); logger.With("query", q).Info("query done")
//	// on SIGHUP (logrotate "create" mode): h.Reopen()
//
// # Guarantees
//
//   - WithAttrs and WithGroup return a new *FileHandler (Prometheus type-asserts derived
//     handlers to slog.Handler + io.Closer) and never modify the receiver. The attributes are
//     resolved, passed through ReplaceAttr and encoded once, at With time. A derived handler
//     keeps its own encoded bytes and a pointer to its parent: about 64 bytes plus its
//     attributes on the heap, however many handlers were derived before or how large the
//     parent's attributes are.
//   - Output equals slog.JSONHandler's byte for byte (keys, order, groups, ReplaceAttr calls
//     with the same groups, source, LogValuer, errors, "!ERROR:"/"!PANIC:" strings for
//     values that cannot be marshalled), checked by a differential test and a fuzz target.
//     Three deliberate differences, where slog is wrong: a group that ends up with no
//     attribute (all dropped by ReplaceAttr, or a LogValuer resolving to an empty group) is
//     left out entirely, where slog writes invalid JSON ("a":1"b":2), an empty object, or
//     passes the dead group's name to ReplaceAttr; WithGroup("") adds no group, as the
//     slog.Handler contract says; a time whose year is outside [0,9999] is written as the
//     error string only, where slog writes the error and the time as two strings.
//   - Every record is one complete line written with one write(2) under a mutex shared by
//     all derived handlers, on a file opened O_APPEND: lines never interleave.
//   - Lines are capped (MaxLineBytes, 1 MiB by default, and never above MaxBytes), and so
//     are the attributes a With chain can carry (MaxWithBytes, 64 KiB by default, per-link
//     overhead included). Past a cap, later attributes are dropped, a long string is cut
//     at a rune boundary, the line ends with "!TRUNCATED":true and the truncation is
//     counted. A WithGroup dropped at the cap drops the record attributes meant for it
//     too, rather than write them outside their group. Repeating the 3.0.0 pattern (h = h.With(...) per query) stays bounded.
//     The caps bound memory as well as lines: a string, []byte, error text, key or group
//     name past the cap is read only as far as the line (or the With chain) can hold it, so
//     one record costs about MaxLineBytes at most however large its values (see Limits for
//     the values encoding/json marshals).
//   - MaxBytes rotates synchronously before the write that would pass it: path becomes
//     path.1, path.i becomes path.i+1, and the oldest beyond MaxBackups is removed. A line
//     never spans two files and no file exceeds MaxBytes.
//   - Close on the handler OpenJSONFile returned closes the file once; later calls return
//     nil. Close on a derived handler does nothing. After Close, Handle on any handler of
//     that file returns ErrClosed (which matches os.ErrClosed): never a panic, never a
//     write to a closed or reused descriptor. Reopen re-opens the path for all of them.
//   - A failed write (disk full, EFBIG, …) is returned from Handle and counted; it never
//     panics or blocks for long, and a partly written line is cut off the file again.
//     slog.Logger (and so promql) drops Handle's error: alert on slogx_write_errors_total. If
//     the path disappears (file removed, or the directory), the handler notices within one
//     second of record time (1024 records for records without a time) and re-creates the
//     file; while it cannot, Handle returns the error, and it recovers once the path can be
//     opened again. Writing on into a removed file would lose every line and keep its disk
//     space allocated until the process exits.
//   - No goroutine is started, ever; goleak stays clean.
//
// # Why not lumberjack
//
// gopkg.in/natefinch/lumberjack.v2 is the usual rotating writer, and it would break two of
// these guarantees: its "mill" goroutine (compression and cleanup) outlives Close (its
// issues #56, #205, #219), which goleak reports in every test of every user; and a Write
// after Close silently reopens the file, so ErrClosed could not hold and promql's reload
// (open new, close old) could keep writing through the old logger. Rotating in the
// handler, under the same mutex as the write, costs nothing on the hot path (one
// comparison) and needs no goroutine.
//
// # Limits
//
//   - Rotation and re-creation run inside Handle, holding the file mutex for a rename and
//     an open: a record that triggers them takes that long, and so do concurrent ones.
//   - Lines written between the removal of the file and its detection (up to a second) go
//     to the removed file and are lost; logrotate's "create" mode plus Reopen loses none.
//   - ReplaceAttr runs for WithAttrs attributes once, when WithAttrs is called, as in slog.
//   - A value marshalled by encoding/json (a struct, map, slice other than []byte, or a
//     json.Marshaler) is built whole by encoding/json before the cap can refuse it: logging
//     one costs its JSON size once, in encoding/json's buffer (what is refused is never
//     copied into the line). Log large data as a string or []byte, or through a LogValuer
//     that trims it.
//   - Enabled looks at the level only; a closed handler still reports enabled levels, and
//     its Handle returns ErrClosed.
//   - Rotated files are not compressed; the newest backup is path.1.
//   - Metrics with a shared Registerer are shared by all handlers registered with it (so a
//     reload keeps counting); wrap the Registerer to tell several files apart.
package slogx
