""":class:`sdl.service.service.LabService`, one part per resource, each a mixin of the same
name as the router that calls it (:mod:`sdl.service.routers`):

======================  ============================================  ==========================
part                    methods                                       router
======================  ============================================  ==========================
``accounts``            me, users, tokens                             ``routers.accounts``
``proposals``           proposals, review, members, audit log         ``routers.proposals``
``instruments``         description, plans, pool, control, share,     ``routers.instruments``
                        queue
``experiments``         submit, list, read, cancel, abort             ``routers.experiments``
``campaigns``           create, control, suggestions, points, veto    ``routers.campaigns``
``data``                table, runs, documents, export                ``routers.data``
``usage``               meter per proposal, dedicated/shared split    ``routers.usage``
======================  ============================================  ==========================

The facade (:mod:`sdl.service.service`) keeps the state, the lifecycle (start, stop,
recover) and the workers' callbacks. Access decisions stay in :mod:`sdl.service.authz`
and :mod:`sdl.service.access`.
"""

from sdl.service.labservice.accounts import AccountsMixin
from sdl.service.labservice.campaigns import CampaignsMixin
from sdl.service.labservice.data import DataMixin
from sdl.service.labservice.experiments import ExperimentsMixin
from sdl.service.labservice.instruments import InstrumentsMixin
from sdl.service.labservice.proposals import ProposalsMixin
from sdl.service.labservice.usage import UsageMixin

__all__ = ["AccountsMixin", "CampaignsMixin", "DataMixin", "ExperimentsMixin", "InstrumentsMixin",
           "ProposalsMixin", "UsageMixin"]
