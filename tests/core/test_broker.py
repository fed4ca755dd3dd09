from pathlib import Path

import pytest

from wharf.core.broker import Broker
from wharf.errors import ResourceLockedError


async def test_data_directory_is_locked_while_open(tmp_path: Path) -> None:
    async with Broker.open(tmp_path / "data") as broker:
        assert broker.path == tmp_path / "data"
        with pytest.raises(ResourceLockedError):
            async with Broker.open(tmp_path / "data"):
                pass
    assert broker.closed
    async with Broker.open(tmp_path / "data") as again:
        assert not again.closed
