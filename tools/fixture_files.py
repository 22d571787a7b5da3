"""Helpers shared by the fixture scripts in tools/."""
import zipfile

import numpy as np


def write_npz(path, **arrays):
    """np.savez (stored, zip64 entries, one <key>.npy per array) with a fixed 1980-01-01 timestamp."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with archive.open(info, "w", force_zip64=True) as file:
                np.lib.format.write_array(file, np.asanyarray(value), allow_pickle=False)
