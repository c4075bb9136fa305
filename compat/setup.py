"""Only here to ship msst_compat.pth at the top level of the wheel (= site-packages).

A .pth file is processed only when it sits directly in a site directory; setuptools'
package_data puts files inside packages and data_files puts them under sys.prefix, so
build_py copies the file into the build root, which becomes the wheel's purelib root.
An editable install (pip install -e) does not get the .pth: install this distribution
regularly (pip install ./compat).
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "msst_compat.pth"


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        here = os.path.dirname(os.path.abspath(__file__))
        self.copy_file(os.path.join(here, PTH), os.path.join(self.build_lib, PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return [*outputs, os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": build_py_with_pth})
