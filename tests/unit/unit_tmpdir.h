/* SPDX-License-Identifier: MIT */
/* A scratch folder for one Criterion suite (its .init and .fini) and paths
 * inside it.  TMPDIR_PREFIX names the folder, e.g. "/tmp/test_vdi". */
#ifndef UNIT_TMPDIR_H
#define UNIT_TMPDIR_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

static char tmpdir[64];

static void make_tmpdir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s.XXXXXX", TMPDIR_PREFIX);
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

/* Four results stay valid at once: a test may hold a source, a target
 * and two more. */
static const char *tmp_path(const char *name)
{
	static char paths[4][128];
	static int next;
	char *p = paths[next++ % 4];

	snprintf(p, 128, "%s/%s", tmpdir, name);
	return p;
}

#endif
