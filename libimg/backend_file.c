/* SPDX-License-Identifier: MIT */
/*
 * The local file backend: files and block devices on this machine.
 * Short transfers are looped, EINTR is retried, and images are locked with
 * OFD locks (which, unlike POSIX locks, belong to the open file description
 * and so survive other code in the process closing an unrelated descriptor
 * of the same file).
 */
#include "backend.h"
#include "internal.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define file_fail img_file_fail

/* ---- open, lock, close ---------------------------------------------------*/

static int file_lock(int fd, bool exclusive)
{
	struct flock fl = {
		.l_type = exclusive ? F_WRLCK : F_RDLCK,
		.l_whence = SEEK_SET,
		.l_start = 0,
		.l_len = 0, /* the whole file, however long it grows */
	};

	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES)
		return -EBUSY;
	/* The file system cannot lock (some network file systems): carry on
	 * unlocked rather than refuse every image there. */
	return 0;
}

static const char lock_busy_msg[] =
	"image is in use by another process (use --force-share/IMG_OPEN_NO_LOCK to override)";

static int file_setup(struct img_file *f, int fd, const char *path,
		      bool writable)
{
	struct stat st;

	f->fd = fd;
	f->writable = writable;
	f->is_block_device = fstat(fd, &st) == 0 && S_ISBLK(st.st_mode);
	(void)path;
	return 0;
}

/* The direct descriptor, where the file system has O_DIRECT (tmpfs, for
 * one, may not: then all I/O stays cached, as with other tools there).
 * The alignment is what statx reports, else one 4 KiB page, which suits
 * 512-byte and 4Kn devices alike. */
static void file_open_direct(struct img_file *f)
{
	struct statx stx;
	uint32_t align = 4096;
	int fd;

	fd = open(f->path,
		  (f->writable ? O_RDWR : O_RDONLY) | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
		align = stx.stx_dio_offset_align > stx.stx_dio_mem_align
				? stx.stx_dio_offset_align
				: stx.stx_dio_mem_align;
	}
	f->direct = true;
	f->direct_fd = fd;
	f->direct_align = align;
}

static void file_close_direct(struct img_file *f)
{
	if (f->direct)
		close(f->direct_fd);
	f->direct = false;
	f->direct_fd = -1;
}

static int file_open(struct img_file *f, const char *path, bool writable,
		     unsigned flags, char *errbuf, size_t errlen)
{
	struct stat st;
	int fd, r;

	fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		return img_error_buf(errbuf, errlen, r, "%s", strerror(-r));
	}
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		close(fd);
		return img_error_buf(errbuf, errlen, -EISDIR, "is a directory");
	}
	if (!(flags & IMG_OPEN_NO_LOCK)) {
		r = file_lock(fd, writable);
		if (r < 0) {
			close(fd);
			return img_error_buf(errbuf, errlen, r, "%s",
					     lock_busy_msg);
		}
	}
	r = file_setup(f, fd, path, writable);
	if (r < 0) {
		close(fd);
		f->fd = -1;
		return img_error_buf(errbuf, errlen, r, "out of memory");
	}
	if (flags & IMG_OPEN_DIRECT)
		file_open_direct(f);
	return 0;
}

static int file_create(struct img_file *f, const char *path, bool excl,
		       char *errbuf, size_t errlen)
{
	int fd, r;

	/* Truncate only after taking the lock: O_TRUNC would destroy an
	 * image another process is using. */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : 0),
		  0644);
	if (fd < 0) {
		r = -errno;
		return img_error_buf(errbuf, errlen, r, "%s", strerror(-r));
	}
	r = file_lock(fd, true);
	if (r < 0) {
		close(fd);
		return img_error_buf(errbuf, errlen, r, "%s", lock_busy_msg);
	}
	r = file_setup(f, fd, path, true);
	if (r < 0) {
		close(fd);
		f->fd = -1;
		return img_error_buf(errbuf, errlen, r, "out of memory");
	}
	if (!f->is_block_device) {
		r = img_file_run_io_hook(IMG_IO_TRUNCATE, f->fd, 0, 0);
		while (r == 0 && ftruncate(f->fd, 0) < 0) {
			if (errno != EINTR)
				r = -errno;
		}
		if (r < 0) {
			img_error_buf(errbuf, errlen, r, "%s", strerror(-r));
			file_close_direct(f);
			close(f->fd);
			f->fd = -1;
			return r;
		}
	}
	return 0;
}

static void file_close(struct img_file *f)
{
	file_close_direct(f);
	if (f->fd >= 0)
		close(f->fd); /* drops the OFD lock with the description */
	f->fd = -1;
}

/* ---- data ----------------------------------------------------------------*/

/* May this request go through the direct descriptor? */
static bool file_direct_ok(const struct img_file *f, const struct iovec *iov,
			   int iovcnt, uint64_t off)
{
	uint32_t a = f->direct_align;

	if (!f->direct || off % a)
		return false;
	for (int i = 0; i < iovcnt; i++)
		if ((uintptr_t)iov[i].iov_base % a || iov[i].iov_len % a)
			return false;
	return true;
}

/*
 * One loop for reads and writes: hand the kernel as much of the iovec as it
 * takes (IOV_MAX entries at a time), and after a short transfer continue
 * from the exact byte it stopped at, without copying the iovec.
 */
static int file_rw(struct img_file *f, const struct iovec *iov, int iovcnt,
		   uint64_t off, bool write, bool zero_eof)
{
	int idx = 0, fd;
	size_t skip = 0; /* bytes of iov[idx] already done */

	if (off > (uint64_t)INT64_MAX)
		return file_fail(f, -EINVAL, "offset %" PRIu64 " too large",
				 off);
	fd = file_direct_ok(f, iov, iovcnt, off) ? f->direct_fd : f->fd;
	while (idx < iovcnt) {
		ssize_t r;

		if (iov[idx].iov_len == 0) {
			idx++;
			continue;
		}
		if (skip == 0) {
			int n = iovcnt - idx < IOV_MAX ? iovcnt - idx : IOV_MAX;

			r = write ? pwritev(fd, iov + idx, n, (off_t)off)
				  : preadv(fd, iov + idx, n, (off_t)off);
		} else {
			/* the rest of a short transfer may be unaligned */
			char *p = (char *)iov[idx].iov_base + skip;
			size_t n = iov[idx].iov_len - skip;

			fd = f->fd;
			r = write ? pwrite(fd, p, n, (off_t)off)
				  : pread(fd, p, n, (off_t)off);
		}
		if (r < 0 && errno == EINVAL && fd != f->fd) {
			/* an alignment the file system did not report: this
			 * request goes through the cache */
			fd = f->fd;
			continue;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return file_fail(f, -errno,
					 "%s at offset %" PRIu64 ": %s",
					 write ? "write" : "read", off,
					 strerror(errno));
		}
		if (r == 0) {
			if (write)
				return file_fail(f, -EIO,
						 "write at offset %" PRIu64
						 " made no progress",
						 off);
			if (!zero_eof)
				return file_fail(
					f, -EIO,
					"unexpected end of file at offset %" PRIu64,
					off);
			/* Zero-fill the rest of the request. */
			memset((char *)iov[idx].iov_base + skip, 0,
			       iov[idx].iov_len - skip);
			for (idx++; idx < iovcnt; idx++)
				memset(iov[idx].iov_base, 0, iov[idx].iov_len);
			return 0;
		}
		off += (uint64_t)r;
		while (r > 0 && idx < iovcnt) {
			size_t rest = iov[idx].iov_len - skip;

			if ((size_t)r >= rest) {
				r -= (ssize_t)rest;
				idx++;
				skip = 0;
			} else {
				skip += (size_t)r;
				r = 0;
			}
		}
	}
	return 0;
}

static int file_preadv(struct img_file *f, const struct iovec *iov, int iovcnt,
		       uint64_t off, bool zero_eof)
{
	return file_rw(f, iov, iovcnt, off, false, zero_eof);
}

static int file_pwritev(struct img_file *f, const struct iovec *iov, int iovcnt,
			uint64_t off)
{
	return file_rw(f, iov, iovcnt, off, true, false);
}

static int file_flush(struct img_file *f)
{
	while (fdatasync(f->fd) < 0) {
		if (errno != EINTR)
			return file_fail(f, -errno, "sync: %s",
					 strerror(errno));
	}
	return 0;
}

static int file_truncate(struct img_file *f, uint64_t size)
{
	if (size > (uint64_t)INT64_MAX)
		return file_fail(f, -EFBIG, "size %" PRIu64 " too large", size);
	while (ftruncate(f->fd, (off_t)size) < 0) {
		if (errno != EINTR)
			return file_fail(f, -errno,
					 "truncate to %" PRIu64 ": %s", size,
					 strerror(errno));
	}
	return 0;
}

static int file_fallocate(struct img_file *f, int mode, uint64_t off,
			  uint64_t len)
{
	if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return -EINVAL;
	while (fallocate(f->fd, mode, (off_t)off, (off_t)len) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static bool unsupported(int r)
{
	return r == -EOPNOTSUPP || r == -ENOTSUP || r == -ENOSYS ||
	       r == -EINVAL || r == -ENODEV;
}

static int file_discard(struct img_file *f, uint64_t off, uint64_t len)
{
	int r = file_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			       off, len);

	if (r < 0 && unsupported(r))
		return -EOPNOTSUPP;
	if (r < 0)
		return file_fail(f, r,
				 "punch hole at %" PRIu64 "+%" PRIu64 ": %s",
				 off, len, strerror(-r));
	return 0;
}

static int file_size(struct img_file *f, uint64_t *size);

static int file_zero(struct img_file *f, uint64_t off, uint64_t len)
{
	uint64_t size;
	int r;

	r = file_fallocate(f, FALLOC_FL_ZERO_RANGE, off, len);
	if (r == 0)
		return 0;
	if (!unsupported(r))
		return file_fail(f, r,
				 "zero range at %" PRIu64 "+%" PRIu64 ": %s",
				 off, len, strerror(-r));
	/* A hole reads as zero too, but only inside the file: past its end
	 * punching would not extend it. */
	if (file_size(f, &size) == 0 && off + len <= size &&
	    file_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
			   len) == 0)
		return 0;
	return -EOPNOTSUPP;
}

static int file_size(struct img_file *f, uint64_t *size)
{
	struct stat st;

	if (fstat(f->fd, &st) < 0)
		return file_fail(f, -errno, "stat: %s", strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		uint64_t bytes;

		if (ioctl(f->fd, BLKGETSIZE64, &bytes) < 0)
			return file_fail(f, -errno, "BLKGETSIZE64: %s",
					 strerror(errno));
		*size = bytes;
		return 0;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

static int file_extent(struct img_file *f, uint64_t off, uint64_t len,
		       bool *is_data, uint64_t *run)
{
	off_t data, hole;

	*is_data = true;
	*run = len;
	if (len == 0 || off > (uint64_t)INT64_MAX)
		return 0;
	data = lseek(f->fd, (off_t)off, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO) {
			/* No data from off to the end of the file. */
			*is_data = false;
			return 0;
		}
		/* The file system cannot tell: everything is data. */
		return 0;
	}
	if ((uint64_t)data > off) {
		*is_data = false;
		if ((uint64_t)data - off < len)
			*run = (uint64_t)data - off;
		return 0;
	}
	hole = lseek(f->fd, (off_t)off, SEEK_HOLE);
	if (hole < 0 || (uint64_t)hole <= off)
		return 0;
	if ((uint64_t)hole - off < len)
		*run = (uint64_t)hole - off;
	return 0;
}

bool img_file_same(const struct img_file *f, const char *path)
{
	struct stat a, b;

	if (f->ops != &img_backend_file || fstat(f->fd, &a) || stat(path, &b))
		return false;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int file_remove(const char *path, char *errbuf, size_t errlen)
{
	if (unlink(path) < 0 && errno != ENOENT)
		return img_error_buf(errbuf, errlen, -errno, "%s",
				     strerror(errno));
	return 0;
}

const struct img_file_ops img_backend_file = {
	.name = "file",
	.open = file_open,
	.create = file_create,
	.close = file_close,
	.preadv = file_preadv,
	.pwritev = file_pwritev,
	.flush = file_flush,
	.size = file_size,
	.truncate = file_truncate,
	.discard = file_discard,
	.zero = file_zero,
	.extent = file_extent,
	.remove = file_remove,
};
