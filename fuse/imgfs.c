/* SPDX-License-Identifier: MIT */
/*
 * imgfs over the libfuse3 high-level API.  Files are fixed: the root holds
 * `disk` and one `partN` per partition.  The partition table is read at
 * mount and again after `disk` was written to (fdisk), before the next
 * lookup; an open partN keeps the byte range it was opened with.
 */
#define FUSE_USE_VERSION 312

#include "imgfs.h"
#include "partition.h"

#include "img.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse3/fuse.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IMGFS_MAX_THREADS 16
/* Bigger FUSE requests mean fewer round trips through the kernel. */
#define IMGFS_MAX_IO (1u << 20)

struct imgfs {
	struct img *img;
	bool read_only;
	uint64_t disk_size;
	struct timespec mount_time;
	uid_t uid;
	gid_t gid;

	pthread_rwlock_t table_lock;
	struct partition_table table;
	atomic_bool table_stale; /* `disk` was written */

	struct fuse *fuse;
	bool mounted;
};

/* What an open file reads and writes: a byte range of the disk. */
struct imgfs_file {
	uint64_t start;
	uint64_t length;
	bool is_disk;
};

static struct imgfs *imgfs_self(void)
{
	return fuse_get_context()->private_data;
}

static int imgfs_table_read(void *opaque, void *buf, size_t len, uint64_t off)
{
	return img_pread(opaque, buf, len, off);
}

static int imgfs_rescan(struct imgfs *fs)
{
	struct partition_table *t = malloc(sizeof(*t));
	int r;

	if (!t)
		return -ENOMEM;
	r = partition_table_scan(imgfs_table_read, fs->img, fs->disk_size, t);
	if (r == 0) {
		pthread_rwlock_wrlock(&fs->table_lock);
		fs->table = *t;
		pthread_rwlock_unlock(&fs->table_lock);
	}
	free(t);
	return r;
}

static void imgfs_refresh(struct imgfs *fs)
{
	if (atomic_exchange(&fs->table_stale, false))
		imgfs_rescan(fs);
}

/* Looks a path up: 0 and the range, or -ENOENT. */
static int imgfs_lookup(struct imgfs *fs, const char *path,
			struct imgfs_file *out)
{
	int number, n = 0;

	if (!strcmp(path, "/disk")) {
		*out = (struct imgfs_file){ 0, fs->disk_size, true };
		return 0;
	}
	/* exactly "/part" and a number without sign, spaces or zeros */
	if (strncmp(path, "/part", 5) || path[5] < '1' || path[5] > '9' ||
	    sscanf(path, "/part%d%n", &number, &n) != 1 || path[n])
		return -ENOENT;
	imgfs_refresh(fs);
	pthread_rwlock_rdlock(&fs->table_lock);
	for (int i = 0; i < fs->table.count; i++) {
		const struct partition *p = &fs->table.parts[i];
		if (p->number == number) {
			*out = (struct imgfs_file){ p->start, p->length,
						    false };
			pthread_rwlock_unlock(&fs->table_lock);
			return 0;
		}
	}
	pthread_rwlock_unlock(&fs->table_lock);
	return -ENOENT;
}

static void *imgfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct imgfs *fs = imgfs_self();

	conn->max_write = IMGFS_MAX_IO;
	conn->max_readahead = IMGFS_MAX_IO;
	/* Sizes never change behind the kernel's back, except partN after
	 * a repartition: keep attribute caching short. */
	cfg->attr_timeout = 1.0;
	cfg->entry_timeout = 1.0;
	cfg->negative_timeout = 0;
	cfg->use_ino = 1;
	cfg->kernel_cache = 0;
	return fs;
}

static void imgfs_destroy(void *private_data)
{
	struct imgfs *fs = private_data;

	if (!fs->read_only)
		img_flush(fs->img);
}

static int imgfs_getattr(const char *path, struct stat *st,
			 struct fuse_file_info *fi)
{
	struct imgfs *fs = imgfs_self();
	struct imgfs_file f;
	int r;

	(void)fi;
	memset(st, 0, sizeof(*st));
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_atim = st->st_mtim = st->st_ctim = fs->mount_time;
	if (!strcmp(path, "/")) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		st->st_ino = 1;
		return 0;
	}
	r = imgfs_lookup(fs, path, &f);
	if (r < 0)
		return r;
	st->st_mode = S_IFREG | (fs->read_only ? 0444 : 0644);
	st->st_nlink = 1;
	st->st_size = (off_t)f.length;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((f.length + 511) / 512);
	st->st_ino = f.is_disk ? 2 : 2 + (ino_t)(path[5] ? atoi(path + 5) : 0);
	return 0;
}

static int imgfs_readdir(const char *path, void *buf, fuse_fill_dir_t fill,
			 off_t offset, struct fuse_file_info *fi,
			 enum fuse_readdir_flags flags)
{
	struct imgfs *fs = imgfs_self();
	char name[32];

	(void)offset;
	(void)fi;
	(void)flags;
	if (strcmp(path, "/"))
		return -ENOTDIR;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	fill(buf, "disk", NULL, 0, 0);
	imgfs_refresh(fs);
	pthread_rwlock_rdlock(&fs->table_lock);
	for (int i = 0; i < fs->table.count; i++) {
		snprintf(name, sizeof(name), "part%d",
			 fs->table.parts[i].number);
		fill(buf, name, NULL, 0, 0);
	}
	pthread_rwlock_unlock(&fs->table_lock);
	return 0;
}

static int imgfs_open(const char *path, struct fuse_file_info *fi)
{
	struct imgfs *fs = imgfs_self();
	struct imgfs_file *f;
	struct imgfs_file found;
	int r;

	r = imgfs_lookup(fs, path, &found);
	if (r < 0)
		return r;
	if (fs->read_only && (fi->flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	f = malloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	*f = found;
	fi->fh = (uint64_t)(uintptr_t)f;
	/* Direct I/O: reads and writes come straight to us in requests as
	 * large as the caller's (up to 1 MiB), with no second copy in the
	 * kernel's page cache, and `disk` and `partN`, which alias the same
	 * bytes, can never show each other stale data.  The price: no
	 * shared mmap of these files. */
	fi->direct_io = 1;
	return 0;
}

static int imgfs_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	free((void *)(uintptr_t)fi->fh);
	return 0;
}

static struct imgfs_file *imgfs_file(struct fuse_file_info *fi)
{
	return (struct imgfs_file *)(uintptr_t)fi->fh;
}

static int imgfs_read(const char *path, char *buf, size_t size, off_t offset,
		      struct fuse_file_info *fi)
{
	struct imgfs *fs = imgfs_self();
	struct imgfs_file *f = imgfs_file(fi);
	int r;

	(void)path;
	if (offset < 0)
		return -EINVAL;
	if ((uint64_t)offset >= f->length)
		return 0;
	if (size > f->length - (uint64_t)offset)
		size = f->length - (uint64_t)offset;
	r = img_pread(fs->img, buf, size, f->start + (uint64_t)offset);
	return r < 0 ? r : (int)size;
}

static int imgfs_write(const char *path, const char *buf, size_t size,
		       off_t offset, struct fuse_file_info *fi)
{
	struct imgfs *fs = imgfs_self();
	struct imgfs_file *f = imgfs_file(fi);
	int r;

	(void)path;
	if (fs->read_only)
		return -EROFS;
	if (offset < 0)
		return -EINVAL;
	/* The file cannot grow: past the end is a full device. */
	if ((uint64_t)offset >= f->length)
		return size ? -ENOSPC : 0;
	if (size > f->length - (uint64_t)offset)
		size = f->length - (uint64_t)offset;
	r = img_pwrite(fs->img, buf, size, f->start + (uint64_t)offset);
	if (r < 0)
		return r;
	if (f->is_disk)
		atomic_store(&fs->table_stale, true);
	return (int)size;
}

static int imgfs_fsync(const char *path, int datasync,
		       struct fuse_file_info *fi)
{
	struct imgfs *fs = imgfs_self();

	(void)path;
	(void)datasync;
	(void)fi;
	return fs->read_only ? 0 : img_flush(fs->img);
}

static int imgfs_truncate(const char *path, off_t size,
			  struct fuse_file_info *fi)
{
	struct imgfs *fs = imgfs_self();
	struct imgfs_file f;
	int r;

	(void)fi;
	r = imgfs_lookup(fs, path, &f);
	if (r < 0)
		return r;
	/* Opening with O_TRUNC, or tools that set the size they already
	 * have, are fine; resizing goes through imgtool resize. */
	return (uint64_t)size == f.length ? 0 : -EPERM;
}

static int imgfs_fallocate(const char *path, int mode, off_t offset,
			   off_t length, struct fuse_file_info *fi)
{
	struct imgfs *fs = imgfs_self();
	struct imgfs_file *f = imgfs_file(fi);

	(void)path;
	if (fs->read_only)
		return -EROFS;
	if (offset < 0 || length <= 0 || (uint64_t)offset > f->length ||
	    (uint64_t)length > f->length - (uint64_t)offset)
		return -EINVAL;
	if (mode == 0)
		return 0; /* everything is already there */
	if (mode & FALLOC_FL_PUNCH_HOLE)
		return img_write_zeroes(fs->img, f->start + (uint64_t)offset,
					(uint64_t)length, IMG_ZERO_MAY_UNMAP);
	if (mode & FALLOC_FL_ZERO_RANGE)
		return img_write_zeroes(fs->img, f->start + (uint64_t)offset,
					(uint64_t)length, 0);
	return -EOPNOTSUPP;
}

/* SEEK_DATA / SEEK_HOLE from block status: regions that read as zeros
 * count as holes. */
static off_t imgfs_lseek(const char *path, off_t off, int whence,
			 struct fuse_file_info *fi)
{
	struct imgfs *fs = imgfs_self();
	struct imgfs_file *f = imgfs_file(fi);
	uint64_t pos;

	(void)path;
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	if (off < 0)
		return -ENXIO;
	if ((uint64_t)off >= f->length)
		return -ENXIO;
	pos = (uint64_t)off;
	while (pos < f->length) {
		struct img_extent ext;
		int r = img_block_status(fs->img, f->start + pos,
					 f->length - pos, &ext);
		if (r < 0)
			return r;
		bool hole = ext.flags & IMG_EXTENT_ZERO;
		if ((whence == SEEK_DATA) != hole)
			return (off_t)pos;
		if (ext.length == 0)
			break;
		pos += ext.length;
	}
	/* past the last extent: no data, or the implicit hole at EOF */
	return whence == SEEK_DATA ? -ENXIO : (off_t)f->length;
}

static int imgfs_statfs(const char *path, struct statvfs *st)
{
	struct imgfs *fs = imgfs_self();

	(void)path;
	memset(st, 0, sizeof(*st));
	st->f_bsize = 4096;
	st->f_frsize = 4096;
	st->f_blocks = fs->disk_size / 4096;
	st->f_files = 2 + (fsfilcnt_t)fs->table.count;
	st->f_namemax = 255;
	return 0;
}

static int imgfs_getxattr(const char *path, const char *name, char *value,
			  size_t size)
{
	char pid[24];
	int len;

	if (strcmp(path, "/") || strcmp(name, IMGFS_PID_XATTR))
		return -ENODATA;
	len = snprintf(pid, sizeof(pid), "%d", (int)getpid());
	if (size == 0)
		return len;
	if (size < (size_t)len)
		return -ERANGE;
	memcpy(value, pid, (size_t)len);
	return len;
}

static const struct fuse_operations imgfs_ops = {
	.init = imgfs_init,
	.destroy = imgfs_destroy,
	.getattr = imgfs_getattr,
	.readdir = imgfs_readdir,
	.open = imgfs_open,
	.release = imgfs_release,
	.read = imgfs_read,
	.write = imgfs_write,
	.fsync = imgfs_fsync,
	.truncate = imgfs_truncate,
	.fallocate = imgfs_fallocate,
	.lseek = imgfs_lseek,
	.statfs = imgfs_statfs,
	.getxattr = imgfs_getxattr,
};

int imgfs_new(struct imgfs **out, struct img *img, bool read_only, char *errbuf,
	      size_t errlen)
{
	struct imgfs *fs = calloc(1, sizeof(*fs));
	int r;

	if (!fs) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	fs->img = img;
	fs->read_only = read_only || !img_is_writable(img);
	fs->disk_size = img_size(img);
	fs->uid = getuid();
	fs->gid = getgid();
	clock_gettime(CLOCK_REALTIME, &fs->mount_time);
	pthread_rwlock_init(&fs->table_lock, NULL);
	r = imgfs_rescan(fs);
	if (r < 0) {
		snprintf(errbuf, errlen, "reading the partition table: %s",
			 img_errmsg(img));
		pthread_rwlock_destroy(&fs->table_lock);
		free(fs);
		return r;
	}
	*out = fs;
	return 0;
}

int imgfs_mount(struct imgfs *fs, const char *mountpoint, const char *fsname,
		bool allow_other, char *errbuf, size_t errlen)
{
	char name[4096], opt[4200];
	char *argv[] = { "imgtool", "-o", opt, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);

	/* A comma would end the option; they are rare in paths. */
	snprintf(name, sizeof(name), "%s", fsname);
	for (char *p = name; *p; p++)
		if (*p == ',')
			*p = '_';
	snprintf(opt, sizeof(opt), "fsname=%s,subtype=imgtool,%s%s", name,
		 fs->read_only ? "ro" : "rw",
		 allow_other ? ",allow_other" : "");
	fs->fuse = fuse_new(&args, &imgfs_ops, sizeof(imgfs_ops), fs);
	fuse_opt_free_args(&args);
	if (!fs->fuse) {
		snprintf(errbuf, errlen, "cannot set up FUSE");
		return -EIO;
	}
	if (fuse_mount(fs->fuse, mountpoint) != 0) {
		snprintf(errbuf, errlen, "%s: cannot mount (FUSE)", mountpoint);
		fuse_destroy(fs->fuse);
		fs->fuse = NULL;
		return -EIO;
	}
	fs->mounted = true;
	return 0;
}

int imgfs_run(struct imgfs *fs)
{
	struct fuse_session *se = fuse_get_session(fs->fuse);
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int r;

	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_max_threads(cfg, IMGFS_MAX_THREADS);
	if (fuse_set_signal_handlers(se) != 0) {
		fuse_loop_cfg_destroy(cfg);
		return -EIO;
	}
	r = fuse_loop_mt(fs->fuse, cfg);
	fuse_remove_signal_handlers(se);
	fuse_loop_cfg_destroy(cfg);
	return r < 0 ? -EIO : 0;
}

void imgfs_free(struct imgfs *fs)
{
	if (!fs)
		return;
	if (fs->fuse) {
		if (fs->mounted)
			fuse_unmount(fs->fuse);
		fuse_destroy(fs->fuse);
	}
	pthread_rwlock_destroy(&fs->table_lock);
	free(fs);
}
