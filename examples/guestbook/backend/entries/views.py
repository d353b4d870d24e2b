from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from guestbook import __version__

from .forms import EntryForm
from .models import Entry


@require_http_methods(['GET', 'POST'])
def index(request):
    if request.method == 'POST':
        form = EntryForm(request.POST)
        if form.is_valid():
            form.save()
            return redirect('entries:index')
    else:
        form = EntryForm()
    entries = Entry.objects.all()[:20]
    return render(request, 'entries/index.html', {'form': form, 'entries': entries})


@require_GET
def healthz(request):
    """For the load balancer: the app is up and its database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute('SELECT 1')
    except Exception as exc:
        return JsonResponse({'status': 'error', 'error': exc.__class__.__name__}, status=503)
    return JsonResponse({'status': 'ok', 'version': __version__})
