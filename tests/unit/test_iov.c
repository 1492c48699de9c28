/* SPDX-License-Identifier: MIT */
/* Unit tests for the iovec toolkit (libimg/iov.c): ranges, gathers and
 * scatters, zero checks, and views with and without a leading buffer, on
 * the stack and on the heap. */
#include "img.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

Test(iov, helpers)
{
	char a[5] = "abcde", b[3] = "fgh", c[4] = "ijkl";
	struct iovec iov[3] = { { a, 5 }, { b, 3 }, { c, 4 } };
	struct iovec out[3];
	char buf[16] = { 0 };

	cr_assert_eq(img_iov_total(iov, 3), 12);
	cr_assert_eq(img_iov_to_buf(iov, 3, 3, buf, 6), 6);
	cr_assert_str_eq(buf, "defghi");
	cr_assert_eq(img_iov_slice(iov, 3, 4, 5, out, 3), 3);
	cr_assert_eq(out[0].iov_base, a + 4);
	cr_assert_eq(out[0].iov_len, 1);
	cr_assert_eq(out[1].iov_len, 3);
	cr_assert_eq(out[2].iov_base, c);
	cr_assert_eq(out[2].iov_len, 1);
	cr_assert_eq(img_iov_slice(iov, 3, 0, 12, out, 2), -EINVAL);
	cr_assert_eq(img_iov_slice(iov, 3, 10, 5, out, 3), -EINVAL);
	img_iov_memset(iov, 3, 4, '-', 5);
	cr_assert_eq(memcmp(a, "abcd-", 5), 0);
	cr_assert_eq(memcmp(b, "---", 3), 0);
	cr_assert_eq(memcmp(c, "-jkl", 4), 0);
	cr_assert_eq(img_iov_from_buf(iov, 3, 7, "XYZ", 3), 3);
	cr_assert_eq(memcmp(b, "--X", 3), 0);
	cr_assert_eq(memcmp(c, "YZkl", 4), 0);
}

Test(iov, zero_detection)
{
	static uint8_t buf[65536];
	struct iovec iov[2] = { { buf, 1000 }, { buf + 1000, 64536 } };

	cr_assert(img_buf_is_zero(buf, sizeof(buf)));
	cr_assert(img_buf_is_zero(buf, 0));
	cr_assert(img_iov_is_zero(iov, 2, sizeof(buf)));
	buf[65535] = 1;
	cr_assert_not(img_buf_is_zero(buf, sizeof(buf)));
	cr_assert(img_buf_is_zero(buf, 65535));
	cr_assert_not(img_iov_is_zero(iov, 2, sizeof(buf)));
	buf[65535] = 0;
	buf[3] = 1;
	cr_assert_not(img_buf_is_zero(buf, 16));
	cr_assert_not(img_buf_is_zero(buf, 17));
}

Test(iov, range_is_zero)
{
	static uint8_t buf[10000];
	struct iovec iov[3] = { { buf, 10 },
				{ buf + 10, 4990 },
				{ buf + 5000, 5000 } };

	buf[7] = 1;
	buf[9000] = 2;
	cr_assert_not(img_iov_range_is_zero(iov, 3, 0, 10));
	cr_assert(img_iov_range_is_zero(iov, 3, 8, 8990));
	cr_assert_not(img_iov_range_is_zero(iov, 3, 8, 8993));
	cr_assert(img_iov_range_is_zero(iov, 3, 9001, 999));
	cr_assert(img_iov_range_is_zero(iov, 3, 9001, 0));
}

Test(iov, view_with_a_lead_on_the_stack)
{
	char a[4] = "abcd", b[4] = "efgh", head[2] = "HH";
	struct iovec iov[2] = { { a, 4 }, { b, 4 } };
	struct img_iov_view v;
	char out[16] = { 0 };

	cr_assert_eq(img_iov_view_init(&v, 2), 0);
	cr_assert_eq(v.iov, v.stack);
	cr_assert_eq(img_iov_view_set(&v, head, 2, iov, 2, 3, 3), 0);
	cr_assert_eq(v.cnt, 3);
	cr_assert_eq(img_iov_to_buf(v.iov, v.cnt, 0, out, sizeof(out)), 5);
	cr_assert_str_eq(out, "HHdef");
	/* a second slice with the same view, no lead */
	cr_assert_eq(img_iov_view_set(&v, NULL, 0, iov, 2, 5, 3), 0);
	cr_assert_eq(v.cnt, 1);
	cr_assert_eq(v.iov[0].iov_base, b + 1);
	cr_assert_eq(img_iov_view_set(&v, NULL, 0, iov, 2, 6, 3), -EINVAL);
	img_iov_view_release(&v);
}

Test(iov, view_of_a_long_iovec_on_the_heap)
{
	enum { N = 500 };
	static uint8_t bytes[N];
	static struct iovec iov[N];
	struct img_iov_view v;

	for (int i = 0; i < N; i++) {
		bytes[i] = (uint8_t)i;
		iov[i].iov_base = &bytes[i];
		iov[i].iov_len = 1;
	}
	cr_assert_eq(img_iov_view(&v, iov, N, 100, 300), 0);
	cr_assert_neq(v.iov, v.stack);
	cr_assert_eq(v.cnt, 300);
	cr_assert_eq(v.iov[0].iov_base, &bytes[100]);
	cr_assert_eq(img_iov_total(v.iov, v.cnt), 300);
	img_iov_view_release(&v);
	/* too short: the whole view fails and frees */
	cr_assert_eq(img_iov_view(&v, iov, N, 400, 200), -EINVAL);
}
