package slogx

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// How often the sink checks that its path still names the file it writes to. A file removed
// under an open descriptor takes writes without error and keeps its disk space until closed:
// the check turns that silent loss (and invisible disk use) into a re-created file.
const (
	checkEvery   = time.Second // by record time
	checkRecords = 1024        // for records without a time
)

// sink is the one file all handlers derived from an OpenJSONFile handler write to. Every
// record is one Write under mu, so lines never interleave and rotation never splits one.
type sink struct {
	path    string
	cfg     *config
	metrics *handlerMetrics
	closed  atomic.Bool // set under mu; read without it to refuse records early

	mu         sync.Mutex
	f          *os.File    // nil while the path cannot be opened: every write retries
	id         os.FileInfo // what f was when opened, to notice the path being replaced
	regular    bool
	size       int64
	checkedAt  time.Time // record time of the last identity check
	unchecked  int       // records since the last identity check
	recheck    bool      // check before the next write (after an error)
	brokenLine bool      // a partial write could not be undone: start the next write on a new line
}

func openSink(path string, cfg *config, m *handlerMetrics) (*sink, error) {
	s := &sink{path: path, cfg: cfg, metrics: m}
	if err := s.open(); err != nil {
		return nil, err
	}
	if cfg.maxBytes > 0 && !s.regular {
		_ = s.f.Close()
		return nil, fmt.Errorf("%w: MaxBytes needs a regular file to rotate; %s is %v", ErrInvalidOptions, path, s.id.Mode().Type())
	}
	return s, nil
}

// open (re)opens the path for appending, replacing and closing the current file on success.
func (s *sink) open() error {
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return err
	}
	if s.f != nil {
		_ = s.f.Close()
	}
	s.f, s.id, s.regular = f, fi, fi.Mode().IsRegular()
	s.size = 0
	if s.regular {
		s.size = fi.Size()
	}
	s.brokenLine = false
	return nil
}

// drop closes the file after it could not be replaced; writes fail until the path opens.
func (s *sink) drop() {
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
	s.recheck = true
}

func (s *sink) write(line []byte, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		s.metrics.refused()
		return ErrClosed
	}
	if err := s.check(now); err != nil {
		s.metrics.writeError()
		return err
	}
	if limit := s.cfg.maxBytes; limit > 0 && s.size > 0 && s.size+int64(len(line)) > limit {
		// s.size is refreshed once a second: a copytruncate since then leaves it stale. Once
		// per rotation, ask the file itself rather than rotate one that is nearly empty.
		if fi, err := s.f.Stat(); err == nil {
			s.size = fi.Size()
		}
		if s.size > 0 && s.size+int64(len(line)) > limit {
			if err := s.rotate(); err != nil {
				s.metrics.writeError()
				return err
			}
		}
	}
	if s.brokenLine {
		n, err := s.f.Write([]byte{'\n'})
		s.size += int64(n)
		if err != nil {
			s.failed(n)
			return fmt.Errorf("slogx: writing %s: %w", s.path, err)
		}
		s.brokenLine = false
	}
	n, err := s.f.Write(line)
	s.size += int64(n)
	if err != nil {
		s.failed(n)
		return fmt.Errorf("slogx: writing %s: %w", s.path, err)
	}
	s.metrics.wrote(n)
	return nil
}

// check makes sure there is a file and, now and then, that it is still the one at the path.
func (s *sink) check(now time.Time) error {
	if s.f != nil && !s.recheck {
		if now.IsZero() {
			if s.unchecked++; s.unchecked < checkRecords {
				return nil
			}
		} else if d := now.Sub(s.checkedAt); d >= 0 && d < checkEvery {
			return nil
		}
	}
	s.recheck, s.unchecked, s.checkedAt = false, 0, now
	if s.f != nil {
		fi, err := os.Stat(s.path)
		if err == nil && os.SameFile(fi, s.id) {
			if s.regular {
				s.size = fi.Size() // another writer, or logrotate's copytruncate
			}
			return nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil // cannot tell (e.g. a permission change): keep the file we have
		}
	}
	// Removed or replaced under us (or never reopened): follow the path, as Reopen would.
	if err := s.open(); err != nil {
		s.drop()
		return fmt.Errorf("slogx: reopening %s: %w", s.path, err)
	}
	s.metrics.reopen()
	return nil
}

// failed accounts for a failed write of which n bytes reached the file, and keeps that
// fragment from gluing itself to the next line.
func (s *sink) failed(n int) {
	s.metrics.writeError()
	s.recheck = true
	if n == 0 {
		return
	}
	// Cut from where this write ended (the file's offset), not from s.size: that may be
	// stale (copytruncate, another writer), and cutting by it could leave the fragment or
	// pad the file with NULs.
	if s.regular {
		if end, err := s.f.Seek(0, io.SeekCurrent); err == nil && end >= int64(n) && s.f.Truncate(end-int64(n)) == nil {
			s.size = end - int64(n)
			return
		}
	}
	s.metrics.partial(n)
	s.brokenLine = true
}

// rotate moves path.i to path.i+1 (overwriting the oldest), path to path.1, and starts a new
// file, all before the write that would pass MaxBytes: a line never spans two files. With
// MaxBackups 0 it leaves numbered files alone: they may be another rotator's.
func (s *sink) rotate() error {
	if n := s.cfg.maxBackups; n > 0 {
		for i := n - 1; i >= 1; i-- {
			if err := os.Rename(s.backup(i), s.backup(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("slogx: rotating %s: %w", s.path, err)
			}
		}
		if err := os.Rename(s.path, s.backup(1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("slogx: rotating %s: %w", s.path, err)
		}
		// A run with more backups left path.n+1 …: they are past the oldest kept, and
		// nothing else would ever remove them. Best effort: the log must go on regardless.
		for i := n + 1; ; i++ {
			if os.Remove(s.backup(i)) != nil {
				break
			}
		}
	} else if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("slogx: rotating %s: %w", s.path, err)
	}
	if err := s.open(); err != nil {
		s.drop()
		return fmt.Errorf("slogx: rotating %s: %w", s.path, err)
	}
	s.metrics.rotation()
	return nil
}

func (s *sink) backup(i int) string { return s.path + "." + strconv.Itoa(i) }

func (s *sink) reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.open(); err != nil {
		// Keep writing to the file we have: after a logrotate rename it is still the log.
		return fmt.Errorf("slogx: reopening %s: %w", s.path, err)
	}
	s.recheck, s.unchecked = false, 0
	s.metrics.reopen()
	return nil
}

func (s *sink) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil
	}
	s.closed.Store(true)
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
