from django.urls import path

from . import views

app_name = 'entries'

urlpatterns = [
    path('', views.index, name='index'),
    path('healthz', views.healthz, name='healthz'),
]
