/* SPDX-License-Identifier: MIT */
/* The format driver table, generated from driver_list.h. */
#include "driver.h"

#define IMG_DRIVER(name) extern const struct img_driver img_driver_##name;
#include "driver_list.h"
#undef IMG_DRIVER

const struct img_driver *const img_drivers[IMG_NDRIVERS] = {
#define IMG_DRIVER(name) &img_driver_##name,
#include "driver_list.h"
#undef IMG_DRIVER
};
